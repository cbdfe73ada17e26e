//! Every state kind, in one table: a role's `type = "NAME"` is looked up here. A kind is a
//! module (a file, or a folder with its helpers) and one line below; nothing else names it.

use crate::engine::build::Constructor;

/// A state kind: its `type` name in roles and its constructor.
pub struct Kind {
    pub name: &'static str,
    pub build: Constructor,
}

/// Declares each kind's module and its entries in `KINDS` (one module may offer several).
macro_rules! kinds {
    ($($module:ident => [$($name:literal: $build:ident),+ $(,)?]),+ $(,)?) => {
        $(pub mod $module;)+
        /// Every kind, in the order they are documented.
        pub const KINDS: &[Kind] = &[$($(Kind { name: $name, build: $module::$build }),+),+];
    };
}

kinds! {
    file => ["file": build],
    directory => ["directory": build],
    symlink => ["symlink": build],
    absent => ["absent": build],
    packages => ["packages": build],
    service => ["service": build],
    user => ["user": build],
    group => ["group": build],
    cron => ["cron": build],
    sysctl => ["sysctl": build],
    firewall => ["firewall": build],
    certificate => ["certificate": build],
    acme => ["acme": build],
    dns_record => ["dns_record": build],
    postgres => ["pg_role": build_role, "pg_database": build_database],
    etcd_member => ["etcd_member": build],
    patroni => ["patroni": build],
}

/// The kind named `name`.
pub fn find(name: &str) -> anyhow::Result<&'static Kind> {
    KINDS.iter().find(|k| k.name == name).ok_or_else(|| {
        let known: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        anyhow::anyhow!("unknown state type `{name}` (known: {})", known.join(", "))
    })
}
