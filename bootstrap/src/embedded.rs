//! The roles compiled into the binary (see build.rs).

include!(concat!(env!("OUT_DIR"), "/embedded_roles.rs"));
