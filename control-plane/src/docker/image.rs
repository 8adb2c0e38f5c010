//! Building images into the local engine from an in-memory context: no
//! registry, no pulls, the legacy builder (no BuildKit frontend to fetch).
//!
//! The engine answers 200 even when a build fails; failure is an `error` /
//! `errorDetail` item somewhere in the stream, so every item is read.

use super::{DockerError, DockerRuntime, FileEntry};
use bollard::query_parameters::BuildImageOptions;
use futures::StreamExt;
use std::collections::HashMap;

/// The agent-runtime image's Dockerfile (the context layout it expects:
/// `agent-runtime`, `ca-certificates.crt`, `zeroclaw-data/`).
pub const AGENT_DOCKERFILE: &str = include_str!("../../../agent-runtime/Dockerfile");

/// The label on images we build (value `true`). Deliberately not
/// [`super::MANAGED_LABEL`]: the engine copies an image's labels into every
/// container made from it, so an image carrying the ownership label would
/// make anyone's `docker run` of it look like ours.
pub const IMAGE_LABEL: &str = "io.zcaas.image";

/// Where the host's CA bundle is read from for the agent image.
pub const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// One entry of a build context. A path ending in `/` is an (empty)
/// directory; `uid`/`gid` matter only for `COPY` without `--chown`.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextEntry {
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

impl From<FileEntry> for ContextEntry {
    fn from(f: FileEntry) -> Self {
        ContextEntry {
            path: f.path,
            contents: f.contents,
            mode: f.mode,
            uid: 0,
            gid: 0,
        }
    }
}

/// The build-context tar: `Dockerfile` first, then `entries`.
pub fn context_tar(dockerfile: &str, entries: &[ContextEntry]) -> Result<Vec<u8>, DockerError> {
    let io = |e: std::io::Error| DockerError::Build(format!("building the context tar: {e}"));
    let mut builder = tar::Builder::new(Vec::new());
    let dockerfile = ContextEntry {
        path: "Dockerfile".into(),
        contents: dockerfile.as_bytes().to_vec(),
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    for entry in std::iter::once(&dockerfile).chain(entries) {
        if entry.path.starts_with('/') || entry.path.split('/').any(|c| c == "..") {
            return Err(DockerError::Build(format!(
                "bad context path {:?}",
                entry.path
            )));
        }
        let mut header = tar::Header::new_gnu();
        if entry.path.ends_with('/') {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(entry.contents.len() as u64);
        }
        header.set_mode(entry.mode);
        header.set_uid(entry.uid);
        header.set_gid(entry.gid);
        header.set_mtime(0);
        builder
            .append_data(&mut header, &entry.path, entry.contents.as_slice())
            .map_err(io)?;
    }
    builder.into_inner().map_err(io)
}

impl DockerRuntime {
    /// Builds the agent-runtime image `tag` from the static binary at `binary`
    /// with `agent-runtime/Dockerfile`, from an in-memory context, no registry.
    /// The context holds `agent-runtime` (mode 0755), the host's CA bundle as
    /// `ca-certificates.crt`, and `zeroclaw-data/` with empty `.zeroclaw/` and
    /// `workspace/`, all owned 65534:65534.
    pub async fn build_agent_image(
        &self,
        tag: &str,
        binary: &std::path::Path,
    ) -> Result<(), DockerError> {
        let read = |path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| DockerError::Build(format!("reading {}: {e}", path.display())))
        };
        let entries = [
            ContextEntry {
                path: "agent-runtime".into(),
                contents: read(binary)?,
                mode: 0o755,
                uid: 0,
                gid: 0,
            },
            ContextEntry {
                path: "ca-certificates.crt".into(),
                contents: read(std::path::Path::new(HOST_CA_BUNDLE))?,
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
            ContextEntry {
                path: "zeroclaw-data/".into(),
                contents: Vec::new(),
                mode: 0o755,
                uid: super::spec::AGENT_UID,
                gid: super::spec::AGENT_GID,
            },
            // Owned by the agent in the image, so in every new volume: on
            // Swarm, files are mounted at paths inside these (secrets), and
            // a missing directory would be created by root.
            ContextEntry {
                path: "zeroclaw-data/.zeroclaw/".into(),
                contents: Vec::new(),
                mode: 0o755,
                uid: super::spec::AGENT_UID,
                gid: super::spec::AGENT_GID,
            },
            ContextEntry {
                path: "zeroclaw-data/workspace/".into(),
                contents: Vec::new(),
                mode: 0o755,
                uid: super::spec::AGENT_UID,
                gid: super::spec::AGENT_GID,
            },
        ];
        self.build_image_from_entries(tag, AGENT_DOCKERFILE, &entries)
            .await
    }

    /// Builds `tag` from `dockerfile` and `files` — `(path, contents, mode)`,
    /// owned by root in the context; a path ending in `/` is an empty
    /// directory — like [`Self::build_image_from_entries`]. For tests'
    /// images (the provider stand-in).
    pub async fn build_image_from_context(
        &self,
        tag: &str,
        dockerfile: &str,
        files: &[(String, Vec<u8>, u32)],
    ) -> Result<(), DockerError> {
        let entries: Vec<ContextEntry> = files
            .iter()
            .map(|(path, contents, mode)| ContextEntry {
                path: path.clone(),
                contents: contents.clone(),
                mode: *mode,
                uid: 0,
                gid: 0,
            })
            .collect();
        self.build_image_from_entries(tag, dockerfile, &entries)
            .await
    }

    /// Builds `tag` from `dockerfile` and `entries` with the legacy builder,
    /// labelled [`IMAGE_LABEL`]`=true`. Reads the whole build stream; any
    /// `error`/`errorDetail` item, or a missing image at the end, is
    /// [`DockerError::Build`] with the engine's message and the last output
    /// lines.
    pub async fn build_image_from_entries(
        &self,
        tag: &str,
        dockerfile: &str,
        entries: &[ContextEntry],
    ) -> Result<(), DockerError> {
        let tar = context_tar(dockerfile, entries)?;
        // `version` is left at its default, the legacy builder (V1); `pull`
        // unset is no pull.
        let options = BuildImageOptions {
            dockerfile: "Dockerfile".to_owned(),
            t: Some(tag.to_owned()),
            rm: true,
            forcerm: true,
            pull: None,
            labels: Some(HashMap::from([(IMAGE_LABEL.to_owned(), "true".to_owned())])),
            ..Default::default()
        };
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_full(tar.into())));
        let mut tail: Vec<String> = Vec::new();
        let mut failure: Option<String> = None;
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                // bollard turns an item with an `errorDetail` message into this.
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    failure.get_or_insert(error);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(line) = info
                .stream
                .as_deref()
                .map(str::trim_end)
                .filter(|l| !l.is_empty())
            {
                tracing::debug!(tag, "{line}");
                tail.push(line.to_owned());
                if tail.len() > 10 {
                    tail.remove(0);
                }
            }
            if let Some(message) = info.error_detail.and_then(|d| d.message) {
                failure.get_or_insert(message);
            }
        }
        if let Some(message) = failure {
            return Err(DockerError::Build(format!(
                "{message} (last output: {})",
                tail.join(" | ")
            )));
        }
        if !self.image_exists(tag).await? {
            return Err(DockerError::Build(format!(
                "build of {tag} ended without an image (last output: {})",
                tail.join(" | ")
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn context_starts_with_the_dockerfile_and_keeps_modes_and_dirs() {
        let entries = [
            ContextEntry {
                path: "bin".into(),
                contents: b"\x7fELF".to_vec(),
                mode: 0o755,
                uid: 0,
                gid: 0,
            },
            ContextEntry {
                path: "data/".into(),
                contents: vec![],
                mode: 0o755,
                uid: 65534,
                gid: 65534,
            },
        ];
        let tar = context_tar("FROM scratch\n", &entries).expect("tar");
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let h = entry.header().clone();
            let mut body = Vec::new();
            entry.read_to_end(&mut body).expect("read");
            seen.push((
                entry.path().expect("path").to_string_lossy().into_owned(),
                h.entry_type().is_dir(),
                h.mode().expect("mode"),
                h.uid().expect("uid"),
                body,
            ));
        }
        assert_eq!(
            seen[0],
            (
                "Dockerfile".into(),
                false,
                0o644,
                0,
                b"FROM scratch\n".to_vec()
            )
        );
        assert_eq!(
            seen[1],
            ("bin".into(), false, 0o755, 0, b"\x7fELF".to_vec())
        );
        assert_eq!(seen[2].0.trim_end_matches('/'), "data");
        assert!(seen[2].1);
        assert_eq!(seen[2].3, 65534);
    }

    #[test]
    fn context_refuses_escaping_paths() {
        for path in ["/etc/x", "../x", "a/../../x"] {
            let entry = ContextEntry {
                path: path.into(),
                contents: vec![],
                mode: 0o644,
                uid: 0,
                gid: 0,
            };
            assert!(context_tar("FROM scratch\n", &[entry]).is_err(), "{path}");
        }
    }

    #[test]
    fn agent_dockerfile_has_no_syntax_line_and_uses_the_context_layout() {
        assert!(
            !AGENT_DOCKERFILE.contains("# syntax"),
            "would pull a frontend image"
        );
        assert!(AGENT_DOCKERFILE.contains("agent-runtime"));
        assert!(AGENT_DOCKERFILE.contains("zeroclaw-data"));
        assert!(
            AGENT_DOCKERFILE.contains("LABEL io.zcaas.runtime-profile=zcaas"),
            "the image names its runtime profile"
        );
    }
}
