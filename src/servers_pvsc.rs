//! `pvlaunch install-paraview NAME`: a profile into ParaView's user `servers.pvsc`
//! (`~/.config/ParaView/servers.pvsc` on Linux), so that its Connect dialog lists it.
//!
//! ParaView rewrites that file on a clean exit from the `<Server>` element trees it holds:
//! unknown elements and attributes inside `<Server>` survive, comments, the XML declaration and
//! anything outside `<Server>` do not, and servers come back sorted by name. The merge here
//! writes what ParaView itself would write: every other server kept (its element tree,
//! unchanged), the installed one replacing a server of the same name, sorted by name. The old
//! file is copied aside first.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::profile::xml::{self, Element};

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{path} is not well-formed XML ({message}); it was left as it is")]
    Malformed { path: String, message: String },
    #[error("{path}'s root element is <{root}>, not <Servers>; it was left as it is")]
    NotServers { path: String, root: String },
    #[error("the profile has no <Server name=\"{0}\">")]
    NoServer(String),
}

/// Escape `s` for an attribute value in double quotes.
pub fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    out
}

fn escape_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An element tree as XML, indented by `depth` levels of two spaces.
pub fn serialize(el: &Element, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    let _ = write!(out, "{pad}<{}", el.name);
    for a in &el.attrs {
        let _ = write!(out, " {}=\"{}\"", a.name, escape_attr(&a.value));
    }
    let text = el.text.as_ref().map(|(t, _)| t.as_str());
    match (el.children.is_empty(), text) {
        (true, None) => out.push_str("/>\n"),
        (true, Some(t)) => {
            let _ = writeln!(out, ">{}</{}>", escape_text(t), el.name);
        }
        (false, t) => {
            out.push_str(">\n");
            if let Some(t) = t {
                let _ = writeln!(out, "{pad}  {}", escape_text(t));
            }
            for c in &el.children {
                serialize(c, depth + 1, out);
            }
            let _ = writeln!(out, "{pad}</{}>", el.name);
        }
    }
}

/// The `<Server name=NAME>` of a profile file's text.
pub fn find_server(text: &str, name: &str) -> Result<Element, MergeError> {
    let root = xml::parse(text).map_err(|e| MergeError::Malformed {
        path: "the profile".into(),
        message: e.message,
    })?;
    root.children
        .into_iter()
        .find(|c| c.name == "Server" && c.attr("name") == Some(name))
        .ok_or_else(|| MergeError::NoServer(name.to_string()))
}

/// What ParaView needs of a server that only has `<PVLaunch>`: a resource, and a
/// `<CommandStartup>` that runs `program connect NAME`.
pub fn complete_for_paraview(mut server: Element, program: &str) -> Element {
    let name = server.attr("name").unwrap_or("").to_string();
    if server.attr("resource").is_none() {
        server.attrs.push(xml::Attr {
            name: "resource".into(),
            value: crate::profile::parse::DEFAULT_PVLAUNCH_RESOURCE.into(),
            offset: 0,
        });
    }
    if server.child("CommandStartup").is_none() && server.child("ManualStartup").is_none() {
        let arg = |v: &str| leaf("Argument", &[("value", v)]);
        let command = Element {
            name: "Command".into(),
            attrs: attrs(&[("exec", program), ("process_wait", "0"), ("delay", "2")]),
            children: vec![Element {
                name: "Arguments".into(),
                attrs: vec![],
                children: vec![arg("connect"), arg(&name)],
                offset: 0,
                text: None,
            }],
            offset: 0,
            text: None,
        };
        server.children.insert(
            0,
            Element {
                name: "CommandStartup".into(),
                attrs: vec![],
                children: vec![command],
                offset: 0,
                text: None,
            },
        );
    }
    server
}

fn attrs(pairs: &[(&str, &str)]) -> Vec<xml::Attr> {
    pairs
        .iter()
        .map(|(n, v)| xml::Attr {
            name: n.to_string(),
            value: v.to_string(),
            offset: 0,
        })
        .collect()
}

fn leaf(name: &str, pairs: &[(&str, &str)]) -> Element {
    Element {
        name: name.into(),
        attrs: attrs(pairs),
        children: vec![],
        offset: 0,
        text: None,
    }
}

/// The new `servers.pvsc`: the servers of `existing` (`None`: no file yet) with `server`
/// added or replacing the one of its name, sorted by name, as ParaView writes it. Also
/// returns whether a server of that name was replaced and the names kept.
pub fn merge(
    existing: Option<&str>,
    path: &str,
    server: &Element,
) -> Result<(String, bool, Vec<String>), MergeError> {
    let name = server.attr("name").unwrap_or("");
    let mut servers: Vec<Element> = match existing {
        None => Vec::new(),
        Some(text) if text.trim().is_empty() => Vec::new(),
        Some(text) => {
            let root = xml::parse(text).map_err(|e| MergeError::Malformed {
                path: path.into(),
                message: e.message,
            })?;
            if root.name != "Servers" {
                return Err(MergeError::NotServers {
                    path: path.into(),
                    root: root.name,
                });
            }
            root.children
                .into_iter()
                .filter(|c| c.name == "Server")
                .collect()
        }
    };
    let before = servers.len();
    servers.retain(|s| s.attr("name") != Some(name));
    let replaced = servers.len() != before;
    let kept: Vec<String> = servers
        .iter()
        .filter_map(|s| s.attr("name").map(str::to_string))
        .collect();
    servers.push(server.clone());
    // ParaView keeps one server per name (the last) and writes them sorted by name.
    let mut seen = std::collections::BTreeMap::new();
    for s in servers {
        seen.insert(s.attr("name").unwrap_or("").to_string(), s);
    }
    let mut out = String::from("<?xml version=\"1.0\"?>\n<Servers>\n");
    for s in seen.values() {
        serialize(s, 1, &mut out);
    }
    out.push_str("</Servers>\n");
    Ok((out, replaced, kept))
}

/// What [`install`] did.
#[derive(Debug)]
pub struct Installed {
    pub file: PathBuf,
    pub backup: Option<PathBuf>,
    pub replaced: bool,
    pub kept: Vec<String>,
}

/// Merge `server` into the file at `path`: the old file copied to `PATH.pvlaunch-backup-SECS`
/// first, the new one written beside it and renamed over it.
pub fn install(path: &Path, server: &Element) -> Result<Installed, color_eyre::Report> {
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(color_eyre::eyre::eyre!(
                "cannot read {}: {e}",
                path.display()
            ));
        }
    };
    let (text, replaced, kept) = merge(existing.as_deref(), &path.display().to_string(), server)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let backup = match &existing {
        Some(_) => {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let mut b = path.as_os_str().to_owned();
            b.push(format!(".pvlaunch-backup-{secs}"));
            let b = PathBuf::from(b);
            std::fs::copy(path, &b)?;
            Some(b)
        }
        None => None,
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(Installed {
        file: path.to_path_buf(),
        backup,
        replaced,
        kept,
    })
}

/// `pvlaunch install-paraview NAME [--file F]`.
pub fn command(
    cli_files: Vec<PathBuf>,
    args: &crate::cli::InstallParaviewArgs,
) -> color_eyre::Result<crate::exit::Code> {
    use crate::exit::Code;
    let places = crate::profile::discover::Places::from_system(cli_files);
    let target = match args
        .file
        .clone()
        .or_else(crate::profile::discover::paraview_user_file)
    {
        Some(p) => p,
        None => {
            crate::say_err!(
                "error: no home folder: where is ParaView's servers.pvsc? (use --file)"
            );
            return Ok(Code::Usage);
        }
    };
    // The profile's definition pvlaunch uses, other than the one already in ParaView's file.
    let catalog = crate::profile::Catalog::load(&places.candidates());
    let entry = catalog
        .entries
        .iter()
        .rev()
        .find(|e| e.server.name == args.name && e.server.location.file != target);
    let Some(entry) = entry else {
        crate::say_err!(
            "error: no profile named `{}` outside {} (pvlaunch list shows them; pvlaunch init writes one)",
            args.name,
            target.display()
        );
        return Ok(Code::Usage);
    };
    let file = &entry.server.location.file;
    let text = std::fs::read_to_string(file)?;
    let server = find_server(&text, &args.name)?;
    let program = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "pvlaunch".into());
    let server = complete_for_paraview(server, &program);
    let done = install(&target, &server)?;
    crate::say!(
        "{} `{}` in {} (from {})",
        if done.replaced { "replaced" } else { "added" },
        args.name,
        done.file.display(),
        file.display()
    );
    if let Some(b) = &done.backup {
        crate::say!("the previous file is kept as {}", b.display());
    }
    if !done.kept.is_empty() {
        crate::say!("your other servers are kept: {}", done.kept.join(", "));
    }
    crate::say!(
        "ParaView's Connect dialog (File > Connect) now lists `{}`; restart ParaView if it is open (it rewrites the file when it exits)",
        args.name
    );
    Ok(Code::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER_FILE: &str = r#"<?xml version="1.0"?>
<!-- my servers -->
<Servers>
  <Server name="zeta" resource="cs://zeta:11111">
    <ManualStartup/>
  </Server>
  <Server name="mine" resource="csrc://localhost:11111" timeout="-1">
    <CommandStartup>
      <Options>
        <Option name="X" label="a &amp; b"><String default="&lt;1&gt;"/></Option>
      </Options>
      <Command exec="ssh" process_wait="0" delay="5">
        <Arguments><Argument value="-R 11111:localhost:11111"/></Arguments>
      </Command>
    </CommandStartup>
    <Hints><Custom>x</Custom></Hints>
  </Server>
  <Server name="old" resource="cs://a:1"><ManualStartup/></Server>
</Servers>
"#;

    fn ours(name: &str) -> Element {
        let text = format!(
            r#"<Servers><Server name="{name}"><PVLaunch version="1"><Login host="login"/></PVLaunch></Server></Servers>"#
        );
        complete_for_paraview(find_server(&text, name).unwrap(), "/opt/bin/pvlaunch")
    }

    #[test]
    fn other_servers_are_kept_whole_and_sorted_as_paraview_writes_them() {
        let (text, replaced, kept) = merge(Some(USER_FILE), "f", &ours("new")).unwrap();
        assert!(!replaced);
        assert_eq!(kept, ["zeta", "mine", "old"]);
        let root = xml::parse(&text).unwrap();
        let names: Vec<_> = root
            .children
            .iter()
            .map(|c| c.attr("name").unwrap())
            .collect();
        assert_eq!(names, ["mine", "new", "old", "zeta"]);
        // The user's own server, unchanged: attributes, options, escapes, unknown elements.
        let old = xml::parse(USER_FILE).unwrap();
        let before = old
            .children
            .iter()
            .find(|c| c.attr("name") == Some("mine"))
            .unwrap();
        let after = root
            .children
            .iter()
            .find(|c| c.attr("name") == Some("mine"))
            .unwrap();
        assert_eq!(strip(before), strip(after));
        // And the result is a valid profile file for pvlaunch too.
        let report = crate::profile::parse::parse_source(crate::profile::diag::Source::new(
            "servers.pvsc",
            text.clone(),
        ));
        assert_eq!(report.errors, 0, "{}", report.rendered());
        assert_eq!(report.servers.len(), 4);
    }

    /// An element tree without offsets, for comparing.
    fn strip(e: &Element) -> String {
        let mut s = String::new();
        serialize(e, 0, &mut s);
        s
    }

    #[test]
    fn a_server_of_the_same_name_is_replaced() {
        let (text, replaced, kept) = merge(Some(USER_FILE), "f", &ours("mine")).unwrap();
        assert!(replaced);
        assert_eq!(kept, ["zeta", "old"]);
        let root = xml::parse(&text).unwrap();
        assert_eq!(root.children.len(), 3);
        let mine = root
            .children
            .iter()
            .find(|c| c.attr("name") == Some("mine"))
            .unwrap();
        assert!(mine.child("PVLaunch").is_some());
    }

    #[test]
    fn a_pvlaunch_only_server_gets_a_startup_and_a_resource() {
        let s = ours("site");
        assert_eq!(s.attr("resource"), Some("csrc://localhost:11111"));
        let cmd = s.child("CommandStartup").unwrap().child("Command").unwrap();
        assert_eq!(cmd.attr("exec"), Some("/opt/bin/pvlaunch"));
        let args: Vec<_> = cmd
            .child("Arguments")
            .unwrap()
            .children
            .iter()
            .map(|a| a.attr("value").unwrap())
            .collect();
        assert_eq!(args, ["connect", "site"]);
    }

    #[test]
    fn no_file_yet_and_broken_files() {
        let (text, _, kept) = merge(None, "f", &ours("a")).unwrap();
        assert!(kept.is_empty());
        assert!(text.starts_with("<?xml version=\"1.0\"?>\n<Servers>\n  <Server name=\"a\""));
        assert!(matches!(
            merge(Some("<Servers><Server"), "f", &ours("a")),
            Err(MergeError::Malformed { .. })
        ));
        assert!(matches!(
            merge(Some("<Other/>"), "f", &ours("a")),
            Err(MergeError::NotServers { .. })
        ));
    }

    #[test]
    fn install_keeps_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ParaView").join("servers.pvsc");
        let first = install(&path, &ours("a")).unwrap();
        assert!(first.backup.is_none());
        let second = install(&path, &ours("b")).unwrap();
        let backup = second.backup.unwrap();
        let old = std::fs::read_to_string(backup).unwrap();
        assert!(old.contains("name=\"a\"") && !old.contains("name=\"b\""));
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(new.contains("name=\"a\"") && new.contains("name=\"b\""));
    }
}
