//! Canary secrets as a careless tool might print them: the scenarios search every output,
//! report and journal for each form, not only the plain text.

use std::fmt::Write;

/// `secret` plain, in base64, in hex and URL-encoded.
pub fn forms(secret: &str) -> Vec<String> {
    let hex = secret.bytes().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    let url = secret.bytes().fold(String::new(), |mut s, b| {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => s.push(b as char),
            _ => {
                let _ = write!(s, "%{b:02X}");
            }
        }
        s
    });
    // coreutils' base64, not one of our own.
    let b64 = std::process::Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(secret.as_bytes())?;
            c.wait_with_output()
        })
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .expect("base64");
    let mut v = vec![secret.to_string(), b64, hex];
    if url != secret {
        v.push(url);
    }
    v
}

/// Panics naming the form and the place when any form of `secret` is in one of `places`.
#[track_caller]
pub fn assert_absent(secret: &str, places: &[(&str, &str)]) {
    for form in forms(secret) {
        for (place, text) in places {
            assert!(!text.contains(&form), "a form of a canary secret ({form}) is in {place}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn forms_of_a_secret() {
        let f = super::forms("a/b+c=");
        assert_eq!(f, ["a/b+c=", "YS9iK2M9", "612f622b633d", "a%2Fb%2Bc%3D"]);
    }
}
