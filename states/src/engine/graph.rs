//! Run order from `requires`: unknown ids and cycles are found before anything runs.

use std::collections::HashMap;

use anyhow::{bail, Result};

/// Indices of `nodes` (id, requires) in an order where every state comes after what it
/// requires; otherwise role order is kept.
pub fn order(nodes: &[(&str, &[String])]) -> Result<Vec<usize>> {
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, (id, _))| (*id, i)).collect();
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(nodes.len());
    for (id, requires) in nodes {
        let mut d = Vec::with_capacity(requires.len());
        for r in requires.iter() {
            match index.get(r.as_str()) {
                Some(&j) => d.push(j),
                None => bail!("state `{id}` requires `{r}`, which no loaded role defines"),
            }
        }
        deps.push(d);
    }

    // Depth-first, visiting in role order: 0 new, 1 on the current path, 2 done.
    let mut mark = vec![0u8; nodes.len()];
    let mut out = Vec::with_capacity(nodes.len());
    for start in 0..nodes.len() {
        if mark[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = 1;
        while let Some(&mut (n, ref mut next)) = stack.last_mut() {
            if let Some(&d) = deps[n].get(*next) {
                *next += 1;
                match mark[d] {
                    0 => {
                        mark[d] = 1;
                        stack.push((d, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|(s, _)| *s == d).unwrap_or(0);
                        let mut cycle: Vec<&str> = stack[from..].iter().map(|(s, _)| nodes[*s].0).collect();
                        cycle.push(nodes[d].0);
                        bail!("`requires` forms a cycle: {}", cycle.join(" -> "));
                    }
                    _ => {}
                }
            } else {
                mark[n] = 2;
                out.push(n);
                stack.pop();
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[(&str, Vec<String>)]) -> Vec<(&'static str, Vec<String>)> {
        v.iter().map(|(a, b)| (Box::leak(a.to_string().into_boxed_str()) as &str, b.clone())).collect()
    }

    fn run(v: &[(&str, Vec<String>)]) -> Result<Vec<usize>> {
        let owned = ids(v);
        let refs: Vec<(&str, &[String])> = owned.iter().map(|(a, b)| (*a, b.as_slice())).collect();
        order(&refs)
    }

    #[test]
    fn dependencies_first_otherwise_role_order() {
        let o = run(&[("a", vec!["c".into()]), ("b", vec![]), ("c", vec![])]).unwrap();
        assert_eq!(o, vec![2, 0, 1]);
    }

    #[test]
    fn unknown_and_cycle() {
        let e = run(&[("a", vec!["zz".into()])]).unwrap_err().to_string();
        assert!(e.contains("`a` requires `zz`"), "{e}");
        let e =
            run(&[("a", vec!["b".into()]), ("b", vec!["c".into()]), ("c", vec!["a".into()])]).unwrap_err().to_string();
        assert!(e.contains("cycle: a -> b -> c -> a"), "{e}");
    }
}
