//! `pvlaunch init NAME --login HOST`: run the checks, then write a complete profile into
//! pvlaunch's config folder (`~/.config/pvlaunch/NAME.pvsc`): the scheduler found, the
//! partitions as an Enumeration, limits from the site, the matching ParaView module, the
//! recipe the checks chose, and a `<CommandStartup>` that runs pvlaunch, so that the same file
//! works in ParaView's Connect dialog. The profile text is pure ([`profile_xml`]).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use crate::check::{self, Partition, SiteFacts};
use crate::exit::Code;
use crate::profile::settings::Recipe;
use crate::scheduler::Kind;
use crate::servers_pvsc::escape_attr;

/// The longest walltime the profile offers when the site names no limit (minutes).
pub const WALLTIME_CAP_MINUTES: u64 = 24 * 60;
/// The walltime offered by default (minutes), within the site's limit.
pub const WALLTIME_DEFAULT_MINUTES: u64 = 60;

/// Everything the profile is made of.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub name: String,
    pub login: String,
    pub user: Option<String>,
    pub jump: Vec<String>,
    pub scheduler: Kind,
    pub partitions: Vec<Partition>,
    /// The partition offered first.
    pub default_partition: Option<String>,
    pub module: Option<String>,
    /// Set-up lines given by the user (instead of the module found).
    pub setup: Vec<String>,
    pub launcher: Option<String>,
    pub recipe: Recipe,
    /// pvlaunch as ParaView should run it (an absolute path: ParaView started from a desktop
    /// may not have the user's PATH).
    pub program: String,
}

impl Inputs {
    pub fn from_facts(
        name: &str,
        login: &str,
        user: Option<String>,
        jump: Vec<String>,
        facts: &SiteFacts,
        recipe: Recipe,
        program: &str,
    ) -> Inputs {
        let up: Vec<Partition> = facts.partitions.iter().filter(|p| p.up).cloned().collect();
        let default_partition = up
            .iter()
            .find(|p| p.default)
            .or(up.first())
            .map(|p| p.name.clone());
        Inputs {
            name: name.to_string(),
            login: login.to_string(),
            user,
            jump,
            scheduler: facts.scheduler.unwrap_or(Kind::None),
            partitions: up,
            default_partition,
            module: facts.module.clone(),
            setup: Vec::new(),
            launcher: facts.launcher.clone(),
            recipe,
            program: program.to_string(),
        }
    }
}

/// The launcher attribute for a launcher program found on the cluster.
pub fn launcher_attr(program: Option<&str>) -> String {
    match program {
        Some("srun") => "srun -n $PVLAUNCH_RANKS$".into(),
        Some("mpirun") => "mpirun -np $PVLAUNCH_RANKS$".into(),
        _ => "mpiexec -n $PVLAUNCH_RANKS$".into(),
    }
}

/// The profile file's text.
pub fn profile_xml(i: &Inputs) -> String {
    let e = |s: &str| escape_attr(s);
    let name = e(&i.name);
    let resource = if i.recipe == Recipe::TwoHop {
        "cs://localhost:11111"
    } else {
        "csrc://localhost:11111"
    };
    let batch = i.scheduler != Kind::None;
    let chosen = i
        .default_partition
        .as_ref()
        .and_then(|d| i.partitions.iter().find(|p| &p.name == d));
    let max_nodes = chosen.and_then(|p| p.nodes).unwrap_or(1).max(1);
    let max_ranks = chosen.and_then(|p| p.cpus_per_node).unwrap_or(64).max(1);
    let max_minutes = chosen
        .and_then(|p| p.max_walltime)
        .map_or(WALLTIME_CAP_MINUTES, |w| (w.as_secs() / 60).max(1));
    let default_minutes = WALLTIME_DEFAULT_MINUTES.min(max_minutes);

    let mut s = String::new();
    s.push_str("<?xml version=\"1.0\"?>\n");
    s.push_str(&format!(
        "<!-- Written by `pvlaunch init {}` for {}. Check it again with `pvlaunch check {}`. -->\n",
        i.name.replace("--", "- -"),
        i.login.replace("--", "- -"),
        i.name.replace("--", "- -")
    ));
    s.push_str("<Servers>\n");
    s.push_str(&format!(
        "  <Server name=\"{name}\" resource=\"{resource}\" timeout=\"-1\">\n"
    ));
    s.push_str("    <CommandStartup>\n      <Options>\n");
    s.push_str("        <Option name=\"PV_CONNECT_ID\" label=\"Connect ID\" readonly=\"true\">\n");
    s.push_str("          <Range type=\"int\" min=\"1\" max=\"2147483647\" default=\"random\"/>\n");
    s.push_str("        </Option>\n");
    let mut sets = Vec::new();
    let with_partitions = batch && !i.partitions.is_empty();
    if with_partitions {
        let default = i.default_partition.clone().unwrap_or_default();
        s.push_str("        <Option name=\"PARTITION\" label=\"Partition\">\n");
        s.push_str(&format!(
            "          <Enumeration default=\"{}\">\n",
            e(&default)
        ));
        for p in &i.partitions {
            let mut label = p.name.clone();
            if let Some(w) = p.max_walltime {
                label.push_str(&format!(" (up to {})", w.hms()));
            }
            s.push_str(&format!(
                "            <Entry value=\"{}\" label=\"{}\"/>\n",
                e(&p.name),
                e(&label)
            ));
        }
        s.push_str("          </Enumeration>\n        </Option>\n");
        sets.push("PARTITION");
    }
    if batch {
        s.push_str("        <Option name=\"NODES\" label=\"Compute nodes\">\n");
        s.push_str(&format!(
            "          <Range type=\"int\" min=\"1\" max=\"{max_nodes}\" default=\"1\"/>\n"
        ));
        s.push_str("        </Option>\n");
        sets.push("NODES");
    }
    s.push_str("        <Option name=\"RANKS\" label=\"pvserver ranks per node\">\n");
    s.push_str(&format!(
        "          <Range type=\"int\" min=\"1\" max=\"{max_ranks}\" default=\"{}\"/>\n",
        max_ranks.min(2)
    ));
    s.push_str("        </Option>\n");
    sets.push("RANKS");
    if batch {
        s.push_str("        <Option name=\"WALLTIME\" label=\"Walltime (minutes)\">\n");
        s.push_str(&format!(
            "          <Range type=\"int\" min=\"1\" max=\"{max_minutes}\" default=\"{default_minutes}\"/>\n"
        ));
        s.push_str("        </Option>\n");
        sets.push("WALLTIME");
    }
    s.push_str("      </Options>\n");
    s.push_str(&format!(
        "      <Command exec=\"{}\" process_wait=\"0\" delay=\"2\">\n        <Arguments>\n",
        e(&i.program)
    ));
    s.push_str("          <Argument value=\"connect\"/>\n");
    s.push_str(&format!("          <Argument value=\"{name}\"/>\n"));
    for o in &sets {
        s.push_str(&format!(
            "          <Argument value=\"--set={o}=${o}$\"/>\n"
        ));
    }
    s.push_str("        </Arguments>\n      </Command>\n    </CommandStartup>\n");
    s.push_str("    <PVLaunch version=\"1\">\n");
    let mut login = format!("      <Login host=\"{}\"", e(&i.login));
    if let Some(u) = &i.user {
        login.push_str(&format!(" user=\"{}\"", e(u)));
    }
    if !i.jump.is_empty() {
        login.push_str(&format!(" jump=\"{}\"", e(&i.jump.join(","))));
    }
    login.push_str("/>\n");
    s.push_str(&login);
    let mut job = format!("      <Job scheduler=\"{}\"", i.scheduler.name());
    if batch {
        job.push_str(" nodes=\"$NODES$\"");
    }
    job.push_str(" ranks-per-node=\"$RANKS$\"");
    if batch {
        job.push_str(" walltime=\"$WALLTIME$\"");
    }
    if with_partitions {
        job.push_str(" partition=\"$PARTITION$\"");
    }
    let setup: Vec<String> = if !i.setup.is_empty() {
        i.setup.clone()
    } else {
        i.module
            .iter()
            .map(|m| format!("module load {m}"))
            .collect()
    };
    if setup.is_empty() {
        job.push_str("/>\n");
    } else {
        job.push_str(">\n");
        for l in &setup {
            job.push_str(&format!("        <Setup line=\"{}\"/>\n", e(l)));
        }
        job.push_str("      </Job>\n");
    }
    s.push_str(&job);
    s.push_str(&format!(
        "      <PVServer exec=\"pvserver\" launcher=\"{}\"/>\n",
        e(&launcher_attr(i.launcher.as_deref()))
    ));
    s.push_str(&format!(
        "      <Connection recipe=\"{}\"/>\n",
        i.recipe.name()
    ));
    s.push_str("    </PVLaunch>\n  </Server>\n</Servers>\n");
    s
}

/// A file name for profile `name` (letters, digits, `.`, `-`, `_`; others become `_`).
pub fn file_name(name: &str) -> String {
    let base: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let base = base.trim_start_matches('.');
    format!("{}.pvsc", if base.is_empty() { "profile" } else { base })
}

/// pvlaunch's config folder (`~/.config/pvlaunch` on Linux).
pub fn config_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "pvlaunch").map(|d| d.config_dir().to_path_buf())
}

/// `pvlaunch init`.
pub fn command(json: bool, args: &crate::cli::InitArgs) -> color_eyre::Result<Code> {
    let Some(dir) = config_dir() else {
        crate::say_err!("error: no home folder: nowhere to write the profile");
        return Ok(Code::Usage);
    };
    let path = dir.join(file_name(&args.name));
    if path.exists() && !args.force {
        crate::say_err!(
            "error: {} exists already; `pvlaunch check {}` checks it, --force replaces it",
            path.display(),
            args.name
        );
        return Ok(Code::Usage);
    }
    let jump = split_jump(args.jump.as_deref());
    let mut site = check::probes::Site::bare(&args.login);
    site.user = args.user.clone();
    site.jump = jump.clone();
    site.partition = args.partition.clone();
    site.setup = args.setup.clone();
    let report = check::run_site(site)?;
    if !json {
        let _ = write!(crate::term::stdout(), "{}", check::report::render(&report));
    }
    let Some(recipe) = report.chosen else {
        if json {
            crate::say!("{}", check::report::json(&report));
        }
        crate::say_err!(
            "pvlaunch init: no recipe can work at {}: nothing written (the fixes above say what the site must change)",
            args.login
        );
        return Ok(report.code());
    };
    let program = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "pvlaunch".into());
    let mut inputs = Inputs::from_facts(
        &args.name,
        &args.login,
        args.user.clone(),
        jump,
        &report.site,
        recipe,
        &program,
    );
    inputs.setup = args.setup.clone();
    if let Some(p) = &args.partition {
        inputs.default_partition = Some(p.clone());
    }
    if !args.yes
        && std::io::stdin().is_terminal()
        && !json
        && let Some(p) = ask_partition(&inputs)?
    {
        inputs.default_partition = Some(p);
    }
    let text = profile_xml(&inputs);
    // The file must be one pvlaunch reads without an error.
    let parsed = crate::profile::parse::parse_source(crate::profile::diag::Source::new(
        path.clone(),
        text.clone(),
    ));
    if parsed.errors > 0 {
        crate::say_err!(
            "pvlaunch init: the profile written would be invalid (a bug; please report it):\n{}",
            parsed.rendered()
        );
        return Ok(Code::Failure);
    }
    if !args.yes && std::io::stdin().is_terminal() && !json {
        let _ = write!(crate::term::stdout(), "\n{text}");
        if !confirm(&format!("write it to {}? [Y/n] ", path.display()))? {
            crate::say!("nothing written");
            return Ok(Code::Success);
        }
    }
    std::fs::create_dir_all(&dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.persist(&path).map_err(|e| e.error)?;
    if json {
        let out = serde_json::json!({
            "profile": args.name,
            "file": path.display().to_string(),
            "recipe": recipe.name(),
            "check": report,
        });
        crate::say!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        if args.yes || !std::io::stdin().is_terminal() {
            let _ = write!(crate::term::stdout(), "\n{text}");
        }
        crate::say!("\nwrote {} (recipe {})", path.display(), recipe.name());
        crate::say!("next: pvlaunch connect {}", quote_arg(&args.name));
        if !args.install_paraview {
            crate::say!(
                "      pvlaunch install-paraview {}   (adds it to ParaView's Connect dialog)",
                quote_arg(&args.name)
            );
        }
    }
    if args.install_paraview {
        let install = crate::cli::InstallParaviewArgs {
            name: args.name.clone(),
            file: None,
        };
        return crate::servers_pvsc::command(Vec::new(), &install);
    }
    Ok(Code::Success)
}

fn quote_arg(s: &str) -> String {
    crate::quote::quote(s)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| s.to_string())
}

/// `--jump a,b` as a list.
pub fn split_jump(jump: Option<&str>) -> Vec<String> {
    jump.map(|j| {
        j.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

fn ask_partition(inputs: &Inputs) -> std::io::Result<Option<String>> {
    if inputs.partitions.len() < 2 {
        return Ok(None);
    }
    let names: Vec<&str> = inputs.partitions.iter().map(|p| p.name.as_str()).collect();
    let default = inputs.default_partition.clone().unwrap_or_default();
    let mut out = std::io::stdout();
    write!(
        out,
        "default partition ({}) [{default}]: ",
        names.join(", ")
    )?;
    out.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let answer = line.trim();
    if answer.is_empty() {
        return Ok(None);
    }
    if names.contains(&answer) {
        Ok(Some(answer.to_string()))
    } else {
        crate::say!("`{answer}` is not one of them: keeping {default}");
        Ok(None)
    }
}

fn confirm(question: &str) -> std::io::Result<bool> {
    let mut out = std::io::stdout();
    write!(out, "{question}")?;
    out.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let a = line.trim().to_ascii_lowercase();
    Ok(a.is_empty() || a == "y" || a == "yes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Walltime;

    fn inputs(kind: Kind, recipe: Recipe) -> Inputs {
        Inputs {
            name: "my site".into(),
            login: "login".into(),
            user: Some("ann".into()),
            jump: vec!["gate".into()],
            scheduler: kind,
            partitions: vec![
                Partition {
                    name: "batch".into(),
                    default: true,
                    up: true,
                    max_walltime: Some(Walltime::from_secs(86400)),
                    nodes: Some(2),
                    cpus_per_node: Some(2),
                },
                Partition {
                    name: "debug".into(),
                    default: false,
                    up: true,
                    max_walltime: Some(Walltime::from_secs(1800)),
                    nodes: Some(1),
                    cpus_per_node: Some(4),
                },
            ],
            default_partition: Some("batch".into()),
            module: Some("paraview/5.11.2".into()),
            setup: vec![],
            launcher: Some("srun".into()),
            recipe,
            program: "/opt/pv launch/pvlaunch".into(),
        }
    }

    fn parse(text: &str) -> crate::profile::parse::FileReport {
        crate::profile::parse::parse_source(crate::profile::diag::Source::new(
            "init.pvsc",
            text.to_string(),
        ))
    }

    #[test]
    fn the_profile_is_valid_and_complete() {
        let text = profile_xml(&inputs(Kind::Slurm, Recipe::Relay));
        let report = parse(&text);
        assert_eq!(report.errors, 0, "{}\n{text}", report.rendered());
        assert_eq!(report.warnings, 0, "{}\n{text}", report.rendered());
        let server = &report.servers[0];
        assert_eq!(server.name, "my site");
        assert_eq!(server.resource_text, "csrc://localhost:11111");
        let root = crate::profile::xml::parse(&text).unwrap();
        let s = &root.children[0];
        let enumeration = s
            .child("CommandStartup")
            .and_then(|c| c.child("Options"))
            .map(|o| {
                o.children
                    .iter()
                    .find(|c| c.attr("name") == Some("PARTITION"))
                    .and_then(|p| p.child("Enumeration"))
                    .unwrap()
                    .clone()
            })
            .unwrap();
        assert_eq!(enumeration.attr("default"), Some("batch"));
        assert_eq!(enumeration.children.len(), 2);
        let pv = s.child("PVLaunch").unwrap();
        assert_eq!(pv.child("Login").unwrap().attr("jump"), Some("gate"));
        assert_eq!(
            pv.child("Connection").unwrap().attr("recipe"),
            Some("relay")
        );
        let job = pv.child("Job").unwrap();
        assert_eq!(job.attr("partition"), Some("$PARTITION$"));
        assert_eq!(
            job.child("Setup").unwrap().attr("line"),
            Some("module load paraview/5.11.2")
        );
        assert_eq!(
            pv.child("PVServer").unwrap().attr("launcher"),
            Some("srun -n $PVLAUNCH_RANKS$")
        );
        assert!(text.contains("max=\"1440\" default=\"60\""), "{text}");
        let cmd = s.child("CommandStartup").unwrap().child("Command").unwrap();
        assert_eq!(cmd.attr("exec"), Some("/opt/pv launch/pvlaunch"));
    }

    #[test]
    fn a_profile_resolves_with_its_defaults() {
        let text = profile_xml(&inputs(Kind::Slurm, Recipe::Reverse));
        let report = parse(&text);
        let server = &report.servers[0];
        let mut ctx = crate::profile::system_context(false);
        let prepared = crate::commands::prepare(
            server,
            &report.source,
            &["PARTITION=debug".into()],
            &mut ctx,
            crate::profile::resolve::Strictness { strict: true },
        );
        let Ok(prepared) = prepared else {
            panic!("the profile does not resolve:\n{text}");
        };
        let launch = prepared.launch.expect("pvlaunch settings");
        assert_eq!(launch.partition.as_deref(), Some("debug"));
        assert_eq!(launch.nodes, 1);
        assert_eq!(launch.ranks_per_node, 2);
        assert_eq!(launch.walltime.map(|w| w.as_secs()), Some(3600));
        assert_eq!(launch.recipe, Recipe::Reverse);
        assert_eq!(launch.jump_hosts, ["gate"]);
    }

    #[test]
    fn two_hop_gets_a_forward_resource_and_no_scheduler_no_job_options() {
        let mut i = inputs(Kind::None, Recipe::TwoHop);
        i.partitions.clear();
        i.module = None;
        let text = profile_xml(&i);
        let report = parse(&text);
        assert_eq!(report.errors, 0, "{}\n{text}", report.rendered());
        assert_eq!(report.servers[0].resource_text, "cs://localhost:11111");
        assert!(
            !text.contains("PARTITION") && !text.contains("WALLTIME"),
            "{text}"
        );
        assert!(text.contains("scheduler=\"none\""));
    }

    #[test]
    fn hostile_names_stay_text() {
        let mut i = inputs(Kind::Slurm, Recipe::Relay);
        i.name = "a\"<b>&c --x".into();
        let text = profile_xml(&i);
        let report = parse(&text);
        assert_eq!(report.errors, 0, "{}\n{text}", report.rendered());
        assert_eq!(report.servers[0].name, "a\"<b>&c --x");
        assert_eq!(file_name("a\"<b>&c --x"), "a__b__c_--x.pvsc");
        assert_eq!(file_name("../x"), "_x.pvsc");
    }
}
