//! The command line, as in DESIGN.md.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "bootstrap",
    version = crate::self_update::release::VERSION,
    about = "Turn a fresh Linux VM into a node of a small web fleet, and keep it that way.",
    subcommand_precedence_over_arg = true,
    after_help = "Exit codes: 0 converged, 1 error, 2 --check found changes, 75 another run holds the lock."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Roles to install on this node (`app`, `db`, or `app db`); with --check, to dry-run.
    pub roles: Vec<String>,

    #[command(flatten)]
    pub opts: Opts,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Converge the recorded roles (what the schedule runs), or the roles given.
    Apply { roles: Vec<String> },
    /// Roles, last run, schedule and next run, pending notifications.
    Status,
    /// Manage secrets.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Leave the fleet: remove this node's DNS records and its schedule.
    Decommission,
    /// Take this app node out of service: give up the floating IP and its SRV record (existing
    /// connections finish); it stays so across scheduled runs until `undrain`.
    Drain,
    /// Put a drained node back in service.
    Undrain,
    /// The operator's side of site bundles: a signing key, and packing a bundle.
    #[command(subcommand)]
    Site(SiteCommand),
    /// Install a release signed with the key built into this binary (the latest, the site's
    /// `bootstrap_version`, or --to), after running it against this node; or roll back.
    SelfUpdate {
        /// The release to install (default: the site's `bootstrap_version`, else the latest).
        #[arg(long, value_name = "VERSION")]
        to: Option<String>,
        /// Put back the binary the last update replaced.
        #[arg(long, conflicts_with_all = ["to", "allow_downgrade"])]
        rollback: bool,
        /// Accept a release older than the installed one.
        #[arg(long)]
        allow_downgrade: bool,
        /// Where releases are published (default: the site setting `release_url`).
        #[arg(long, value_name = "URL")]
        release_url: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SiteCommand {
    /// Make a signing key pair: DIR/site.key (secret, 0600) and DIR/site.pub.
    Keygen {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Pack DIR (site.toml, roles/*.toml, templates/*) into a signed bundle: OUT and OUT.minisig.
    Pack {
        dir: PathBuf,
        /// The secret key from `bootstrap site keygen`.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        #[arg(short = 'o', long = "out", value_name = "OUT")]
        out: PathBuf,
        /// The bundle's serial (default: the current time in seconds, so it only grows).
        #[arg(long)]
        serial: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Rotate a secret (from BOOTSTRAP_SECRET_<NAME>, credentials, --secrets-file or a prompt)
    /// and re-apply what depends on it.
    Set { name: String },
}

#[derive(Args, Debug, Clone)]
pub struct Opts {
    /// Dry run: show what would change, with diffs, and change nothing. Exit 2 when changes are
    /// pending.
    #[arg(long, global = true)]
    pub check: bool,

    /// Print the result as JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// Also list states that are already converged.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Apply the states to this directory tree instead of `/` (tests, image builds).
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    /// Use the roles in DIR instead of the embedded ones.
    #[arg(long = "roles", global = true, value_name = "DIR")]
    pub roles_dir: Option<PathBuf>,

    /// Site settings (TOML): a file or an https URL; default: the recorded
    /// /etc/bootstrap/site.toml.
    #[arg(long, global = true, value_name = "FILE|URL")]
    pub site: Option<String>,

    /// Follow a signed site bundle (`--site URL`) signed with this minisign public key (`RW…`).
    #[arg(long, global = true, value_name = "PUBKEY")]
    pub site_key: Option<String>,

    /// Refuse the site settings unless their sha256 is this.
    #[arg(long, global = true, value_name = "HEX")]
    pub site_sha256: Option<String>,

    /// Secrets (TOML, `name = "value"`), read in addition to the environment and credentials.
    #[arg(long, global = true, value_name = "FILE")]
    pub secrets_file: Option<PathBuf>,

    /// Colored diffs: auto (on a terminal), always, never.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Color {
    Auto,
    Always,
    Never,
}
