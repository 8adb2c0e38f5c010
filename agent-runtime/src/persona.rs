//! The system prompt, assembled from the workspace's persona files.
//!
//! Files, in order: `IDENTITY.md`, `SOUL.md`, `USER.md`, then `AGENTS.md`, `TOOLS.md` and
//! `MEMORY.md`. Each present, non-empty file becomes one `## <FILE>` section, its text capped
//! at [`SECTION_CAP_CHARS`] characters (a marker notes the cut); missing or unreadable files
//! are skipped. The files are re-read for every message, so edits take effect without a restart.

use std::path::Path;

/// Persona files, in prompt order.
pub const PERSONA_FILES: [&str; 6] = [
    "IDENTITY.md",
    "SOUL.md",
    "USER.md",
    "AGENTS.md",
    "TOOLS.md",
    "MEMORY.md",
];

/// Most characters (Unicode scalar values) kept from one file.
pub const SECTION_CAP_CHARS: usize = 20_000;

/// The prompt used when the workspace has no persona file at all.
pub const FALLBACK_PROMPT: &str = "You are a helpful AI assistant.";

/// One persona section: file name and (capped) text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// e.g. `IDENTITY.md`.
    pub name: &'static str,
    /// The file's text, at most [`SECTION_CAP_CHARS`] characters plus the truncation marker.
    pub text: String,
}

/// Caps `text` at `cap` characters, appending a marker when something was cut.
pub fn cap_chars(text: &str, cap: usize) -> String {
    match text.char_indices().nth(cap) {
        None => text.to_owned(),
        Some((byte, _)) => format!("{}\n[… truncated at {cap} characters]", &text[..byte]),
    }
}

/// Reads the persona sections of `workspace`.
pub fn load_sections(workspace: &Path) -> Vec<Section> {
    PERSONA_FILES
        .iter()
        .filter_map(|name| {
            let text = std::fs::read_to_string(workspace.join(name)).ok()?;
            let text = text.trim();
            (!text.is_empty()).then(|| Section {
                name,
                text: cap_chars(text, SECTION_CAP_CHARS),
            })
        })
        .collect()
}

/// Joins sections (and optional extra context, e.g. recent markdown memory) into the system
/// prompt.
pub fn assemble(sections: &[Section], extra: Option<(&str, &str)>) -> String {
    let mut out = String::new();
    for s in sections {
        out.push_str("## ");
        out.push_str(s.name);
        out.push_str("\n\n");
        out.push_str(&s.text);
        out.push_str("\n\n");
    }
    if let Some((title, body)) = extra.filter(|(_, b)| !b.trim().is_empty()) {
        out.push_str("## ");
        out.push_str(title);
        out.push_str("\n\n");
        out.push_str(body.trim());
        out.push_str("\n\n");
    }
    let out = out.trim_end().to_owned();
    if out.is_empty() {
        FALLBACK_PROMPT.to_owned()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_follow_the_fixed_order_and_skip_missing_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let ws = dir.path();
        std::fs::write(ws.join("USER.md"), "User: Ada, UTC").expect("w");
        std::fs::write(ws.join("IDENTITY.md"), "Name: Claw").expect("w");
        std::fs::write(ws.join("TOOLS.md"), "  \n").expect("w");
        std::fs::write(ws.join("MEMORY.md"), "likes tea").expect("w");
        let sections = load_sections(ws);
        let names: Vec<_> = sections.iter().map(|s| s.name).collect();
        assert_eq!(names, vec!["IDENTITY.md", "USER.md", "MEMORY.md"]);
        let prompt = assemble(&sections, None);
        assert_eq!(
            prompt,
            "## IDENTITY.md\n\nName: Claw\n\n## USER.md\n\nUser: Ada, UTC\n\n## MEMORY.md\n\nlikes tea"
        );
        let with_notes = assemble(&sections, Some(("Recent", "- hi")));
        assert!(with_notes.ends_with("## Recent\n\n- hi"));
    }

    #[test]
    fn each_file_is_capped_at_20000_characters() {
        let dir = tempfile::tempdir().expect("tmp");
        // Multi-byte characters: the cap counts characters, not bytes.
        let long = "é".repeat(SECTION_CAP_CHARS + 5);
        std::fs::write(dir.path().join("SOUL.md"), &long).expect("w");
        let s = &load_sections(dir.path())[0];
        let kept: String = s.text.chars().take_while(|c| *c == 'é').collect();
        assert_eq!(kept.chars().count(), SECTION_CAP_CHARS);
        assert!(s.text.ends_with("[… truncated at 20000 characters]"));
        let exact = "a".repeat(SECTION_CAP_CHARS);
        assert_eq!(cap_chars(&exact, SECTION_CAP_CHARS), exact);
    }

    #[test]
    fn empty_workspace_falls_back_to_a_plain_prompt() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(load_sections(dir.path()).is_empty());
        assert_eq!(assemble(&[], None), FALLBACK_PROMPT);
        assert_eq!(assemble(&[], Some(("x", " "))), FALLBACK_PROMPT);
    }
}
