//! Every state kind, in one table: a role's `type = "NAME"` is looked up here. A kind is a
//! module (a file, or a folder with its helpers) and one line below; nothing else names it.

use crate::engine::build::Constructor;

/// A state kind: its `type` name in roles, its constructor, and what it observes early.
pub struct Kind {
    pub name: &'static str,
    pub build: Constructor,
    /// What the kind observes whatever its parameters (a child process, a socket), asked for
    /// while the role compiles so the plans find it made. Its errors are left for the plans.
    pub early: Option<fn(&crate::engine::context::Context)>,
}

/// Declares each kind's module and its entries in `KINDS` (one module may offer several);
/// `build + early` names the module's early observation too.
macro_rules! kinds {
    ($($module:ident => [$($name:literal: $build:ident $(+ $early:ident)?),+ $(,)?]),+ $(,)?) => {
        $(pub mod $module;)+
        /// Every kind, in the order they are documented.
        pub const KINDS: &[Kind] = &[$($(Kind {
            name: $name,
            build: $module::$build,
            early: early!($module $($early)?),
        }),+),+];
    };
}

macro_rules! early {
    ($module:ident) => {
        None
    };
    ($module:ident $early:ident) => {
        Some($module::$early)
    };
}

kinds! {
    file => ["file": build],
    directory => ["directory": build],
    symlink => ["symlink": build],
    absent => ["absent": build],
    packages => ["packages": build + early],
    service => ["service": build],
    user => ["user": build],
    group => ["group": build],
    cron => ["cron": build],
    sysctl => ["sysctl": build],
    firewall => ["firewall": build + early],
    certificate => ["certificate": build],
    acme => ["acme": build],
    dns_record => ["dns_record": build],
    ssh_key => ["ssh_key": build],
    mount => ["mount": build],
    postgres => ["pg_role": build_role + early, "pg_database": build_database + early],
    etcd_member => ["etcd_member": build],
    patroni => ["patroni": build],
    swarm_member => ["swarm_member": build],
    stack => ["stack": build],
}

/// The kind named `name`.
pub fn find(name: &str) -> anyhow::Result<&'static Kind> {
    KINDS.iter().find(|k| k.name == name).ok_or_else(|| {
        let known: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        anyhow::anyhow!("unknown state type `{name}` (known: {})", known.join(", "))
    })
}
