//! One wrapper per system tool or protocol. Kinds reach tools through these, never directly.

pub mod accounts;
pub mod acme_client;
pub mod apt;
pub mod challenge;
pub mod dns_challenge;
pub mod dns_client;
pub mod docker_api;
pub mod dpkg_status;
pub mod etcd;
pub mod fetch;
pub mod http;
pub mod nft;
pub mod package_manager;
pub mod patroni;
pub mod pg_socket;
pub mod psql;
pub mod rest;
pub mod scram;
pub mod scram_checked;
pub mod signature;
pub mod sockets;
pub mod ssh_keygen;
pub mod sshd_port;
pub mod systemd;
pub mod systemd_bus;
pub mod x509;
