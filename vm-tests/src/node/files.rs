//! A node's files: written from the host into its tree, read and tested as the node sees them.

use super::Node;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

impl Node {
    /// Host path of `path` inside the node (whether running or not).
    pub fn host_path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// Writes a file into the node (owner root, `mode`), creating parent directories. Works
    /// before boot and while running. A symlink at `path` is replaced, never followed (it would
    /// point into the host).
    pub fn put_file(&self, path: &str, contents: &[u8], mode: u32) {
        let p = self.host_path(path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_file(&p).unwrap();
        }
        fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Contents of a file as the node sees it (through its mounts and symlinks). Panics if
    /// it can't be read.
    pub fn read_file(&self, path: &str) -> String {
        self.exec(&["cat", path]).assert_ok(&format!("cat {path} on {}", self.name)).stdout
    }

    /// Whether `path` exists inside the node.
    pub fn exists(&self, path: &str) -> bool {
        self.exec(&["test", "-e", path]).success()
    }
}
