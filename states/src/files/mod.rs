//! What the kinds that write files share: owner, group and mode; whole generated config files.

pub mod conf_file;
pub mod ownership;
