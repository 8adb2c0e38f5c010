//! In-memory tar archives for the archive API (putArchive).
//!
//! The engine extracts the archive as root into the destination directory and
//! keeps each header's mode, uid/gid and mtime, so every header is filled in
//! explicitly: the agent runs as `65534:65534` and its config must be `0600`
//! and owned by it. Parent directories get their own entries (mode `0755`,
//! same owner) so that a directory created by the extraction is not left
//! owned by root.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

pub use crate::orchestrator::FileEntry;

/// Errors building an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The path is empty, absolute, or has an empty, `.` or `..` component.
    #[error("refusing archive path {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("writing tar: {0}")]
    Io(#[from] std::io::Error),
}

/// Mode of the directory entries created for parents of the files.
pub const DIR_MODE: u32 = 0o755;

/// Builds a finished tar (ending with two zero blocks) holding `files`, each
/// preceded by entries for its parent directories (once each, mode
/// [`DIR_MODE`]). Every entry is owned by `uid:gid` and stamped with the
/// current time.
///
/// Errors: [`ArchiveError::BadPath`] for an absolute path, `..`, `.` or an
/// empty component (so nothing can land outside the destination).
pub fn build_tar(files: &[FileEntry], uid: u64, gid: u64) -> Result<Vec<u8>, ArchiveError> {
    let mtime = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs_done = BTreeSet::new();
    for file in files {
        let components = check_path(&file.path)?;
        // Parent directories, outermost first.
        for depth in 1..components.len() {
            let dir = components[..depth].join("/");
            if dirs_done.insert(dir.clone()) {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                fill_header(&mut header, DIR_MODE, uid, gid, mtime);
                builder.append_data(&mut header, format!("{dir}/"), std::io::empty())?;
            }
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(file.contents.len() as u64);
        fill_header(&mut header, file.mode, uid, gid, mtime);
        builder.append_data(&mut header, &file.path, file.contents.as_slice())?;
    }
    Ok(builder.into_inner()?)
}

fn fill_header(header: &mut tar::Header, mode: u32, uid: u64, gid: u64, mtime: u64) {
    header.set_mode(mode);
    header.set_uid(uid);
    header.set_gid(gid);
    header.set_mtime(mtime);
}

/// Splits a relative path into its components, refusing anything that could
/// escape the destination directory.
fn check_path(path: &str) -> Result<Vec<&str>, ArchiveError> {
    let bad = |reason| ArchiveError::BadPath {
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(bad("empty path"));
    }
    if path.starts_with('/') {
        return Err(bad("absolute path"));
    }
    if path.contains('\0') || path.contains('\\') {
        return Err(bad("NUL or backslash in path"));
    }
    let components: Vec<&str> = path.split('/').collect();
    for component in &components {
        match *component {
            "" => return Err(bad("empty component")),
            "." => return Err(bad("`.` component")),
            ".." => return Err(bad("`..` component")),
            _ => {}
        }
    }
    Ok(components)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// (path, type, mode, uid, gid, mtime, contents) of every entry.
    type ReadEntry = (String, tar::EntryType, u32, u64, u64, u64, Vec<u8>);

    fn read_back(bytes: &[u8]) -> Vec<ReadEntry> {
        let mut archive = tar::Archive::new(bytes);
        let mut out = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let header = entry.header().clone();
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            let mut contents = Vec::new();
            entry.read_to_end(&mut contents).expect("read");
            out.push((
                path,
                header.entry_type(),
                header.mode().expect("mode"),
                header.uid().expect("uid"),
                header.gid().expect("gid"),
                header.mtime().expect("mtime"),
                contents,
            ));
        }
        out
    }

    fn file(path: &str, contents: &str, mode: u32) -> FileEntry {
        FileEntry {
            path: path.into(),
            contents: contents.as_bytes().to_vec(),
            mode,
        }
    }

    #[test]
    fn files_and_parent_dirs_carry_owner_mode_and_mtime() {
        let files = [
            file(".zeroclaw/config.toml", "api_key = \"k\"\n", 0o600),
            file("workspace/IDENTITY.md", "# Ada\n", 0o644),
            file("workspace/USER.md", "", 0o644),
            file("workspace/deep/er/x.md", "x", 0o640),
        ];
        let bytes = build_tar(&files, 65534, 65533).expect("tar");
        let entries = read_back(&bytes);
        let names: Vec<(&str, tar::EntryType)> =
            entries.iter().map(|e| (e.0.as_str(), e.1)).collect();
        use tar::EntryType::{Directory as D, Regular as R};
        assert_eq!(
            names,
            vec![
                (".zeroclaw/", D),
                (".zeroclaw/config.toml", R),
                ("workspace/", D),
                ("workspace/IDENTITY.md", R),
                ("workspace/USER.md", R),
                ("workspace/deep/", D),
                ("workspace/deep/er/", D),
                ("workspace/deep/er/x.md", R),
            ]
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        for (path, kind, mode, uid, gid, mtime, _) in &entries {
            assert_eq!((*uid, *gid), (65534, 65533), "{path}");
            assert!(
                now.abs_diff(*mtime) < 60,
                "{path}: mtime {mtime} vs now {now}"
            );
            if *kind == D {
                assert_eq!(*mode, DIR_MODE, "{path}");
            }
        }
        assert_eq!(entries[1].2, 0o600);
        assert_eq!(entries[1].6, b"api_key = \"k\"\n");
        assert_eq!(entries[3].2, 0o644);
        assert_eq!(entries[3].6, b"# Ada\n");
        assert_eq!(entries[4].6, b"");
        assert_eq!(entries[7].2, 0o640);
    }

    #[test]
    fn archive_is_finished_with_two_zero_blocks() {
        let bytes = build_tar(&[file("a", "hello", 0o644)], 1, 1).expect("tar");
        assert_eq!(bytes.len() % 512, 0);
        assert!(bytes.len() >= 1024 + 512);
        assert!(bytes[bytes.len() - 1024..].iter().all(|b| *b == 0));
        // An empty archive is just the end marker.
        let empty = build_tar(&[], 1, 1).expect("tar");
        assert!(empty.len() >= 1024 && empty.iter().all(|b| *b == 0));
    }

    #[test]
    fn long_paths_round_trip() {
        let long = format!("workspace/{}.md", "n".repeat(150));
        let bytes = build_tar(&[file(&long, "x", 0o644)], 0, 0).expect("tar");
        let entries = read_back(&bytes);
        assert_eq!(entries.last().expect("entry").0, long);
    }

    #[test]
    fn refuses_paths_that_could_escape() {
        for path in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\\b",
            "a\0b",
        ] {
            let err = build_tar(&[file(path, "x", 0o644)], 0, 0);
            assert!(
                matches!(err, Err(ArchiveError::BadPath { .. })),
                "{path:?} accepted"
            );
        }
    }

    #[test]
    fn shared_parent_dir_appears_once() {
        let bytes =
            build_tar(&[file("w/a", "1", 0o644), file("w/b", "2", 0o644)], 0, 0).expect("tar");
        let dirs = read_back(&bytes).iter().filter(|e| e.0 == "w/").count();
        assert_eq!(dirs, 1);
    }
}
