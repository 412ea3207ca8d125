//! The service file (TOML): which state each service has, and how to dump and load it.
//!
//! ```toml
//! repository    = "/var/backups/cairn"        # optional; -r / CAIRN_REPO win
//! password-file = "/etc/cairn/key"            # optional
//!
//! [service.drupal]
//! stop  = "herd stop drupal"                  # optional, run before a load
//! start = "herd start drupal"                 # optional, run after a load
//!
//! [[service.drupal.state]]
//! name    = "sites"
//! path    = "/var/lib/drupal/sites"
//! exclude = ["default/files/css", "default/files/js"]
//!
//! [[service.drupal.state]]
//! name = "db"
//! dump = "mysqldump --single-transaction drupal"   # a string runs with sh -c; an array runs directly
//! load = "mysql drupal"
//! ```
//! Every mistake is reported with the line it is on.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::command::CommandLine;
use crate::error::{Error, Result};

/// The parsed, checked file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceFile {
    /// Repository directory, if the file names one.
    pub repository: Option<PathBuf>,
    /// Password file, if the file names one.
    pub password_file: Option<PathBuf>,
    /// Services by name.
    pub services: BTreeMap<String, Service>,
}

/// One service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Its name.
    pub name: String,
    /// Run before a load.
    pub stop: Option<CommandLine>,
    /// Run after a load (also after a failed one).
    pub start: Option<CommandLine>,
    /// Its state, in the order given.
    pub state: Vec<StateItem>,
}

/// One piece of a service's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateItem {
    /// Its name in snapshots: a directory or file in the snapshot's root.
    pub name: String,
    /// Where it lives and how it is saved.
    pub kind: StateKind,
}

/// A directory tree, or a database reached through a dump and a load program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateKind {
    /// A file or directory.
    Path {
        /// Where it is.
        path: PathBuf,
        /// Paths below it (relative, `/`-separated) left out of snapshots.
        exclude: Vec<String>,
    },
    /// A stream: `dump` writes it to standard output, `load` reads it from standard input.
    Dump {
        /// Writes the state.
        dump: CommandLine,
        /// Reads it back.
        load: CommandLine,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFile {
    repository: Option<PathBuf>,
    password_file: Option<PathBuf>,
    #[serde(default)]
    service: BTreeMap<String, Spanned<RawService>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    stop: Option<RawCommand>,
    start: Option<RawCommand>,
    #[serde(default)]
    state: Vec<Spanned<RawItem>>,
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a command: a string (run with sh -c) or an array of strings"
)]
enum RawCommand {
    Shell(String),
    Argv(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem {
    name: Spanned<String>,
    path: Option<PathBuf>,
    exclude: Option<Vec<String>>,
    dump: Option<RawCommand>,
    load: Option<RawCommand>,
}

fn command(raw: Option<RawCommand>, what: &str, line: usize) -> Result<Option<CommandLine>> {
    match raw {
        None => Ok(None),
        Some(RawCommand::Shell(s)) if s.trim().is_empty() => {
            Err(at(line, format!("{what} is empty")))
        }
        Some(RawCommand::Shell(s)) => Ok(Some(CommandLine::Shell(s))),
        Some(RawCommand::Argv(v)) if v.is_empty() || v[0].is_empty() => {
            Err(at(line, format!("{what} is empty")))
        }
        Some(RawCommand::Argv(v)) => Ok(Some(CommandLine::Argv(v))),
    }
}

fn at(line: usize, why: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("service file, line {line}: {why}"))
}

/// Checks a revision label: it becomes the second half of `SERVICE@REV`, where `~N` means
/// "N snapshots back", so it may hold no `@`, `~`, white space or control characters.
pub fn valid_revision(rev: &str) -> bool {
    !rev.is_empty()
        && rev.len() <= 255
        && !rev.contains(['@', '~'])
        && !rev.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Checks a service name: it becomes the first half of `SERVICE@REV`.
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['@', '~', '/']) && !name.chars().any(char::is_whitespace)
}

impl ServiceFile {
    /// Parses and checks the text of a service file.
    pub fn parse(text: &str) -> Result<Self> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(s.start)).unwrap_or(0);
            at(line, e.message())
        })?;
        let mut services = BTreeMap::new();
        for (name, svc) in raw.service {
            let line = line_of(svc.span().start);
            if !valid_service_name(&name) {
                return Err(at(
                    line,
                    format!(
                        "service name {name:?} may not be empty or hold '@', '~', '/' or spaces"
                    ),
                ));
            }
            let svc = svc.into_inner();
            let mut state = Vec::new();
            let mut names = std::collections::HashSet::new();
            for item in svc.state {
                let line = line_of(item.span().start);
                let item = item.into_inner();
                let item_name = item.name.get_ref().clone();
                let name_line = line_of(item.name.span().start);
                if item_name.is_empty()
                    || item_name == "."
                    || item_name == ".."
                    || item_name.contains(['/', '\0'])
                {
                    return Err(at(
                        name_line,
                        format!("state name {item_name:?} must be a plain file name"),
                    ));
                }
                if !names.insert(item_name.clone()) {
                    return Err(at(
                        name_line,
                        format!("service {name} has two state items named {item_name:?}"),
                    ));
                }
                let dump = command(item.dump, "dump", line)?;
                let load = command(item.load, "load", line)?;
                let kind = match (item.path, dump, load) {
                    (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                        return Err(at(
                            line,
                            format!(
                                "state {item_name:?} has both `path` and `dump`/`load`; give one"
                            ),
                        ));
                    }
                    (Some(path), None, None) => {
                        if !path.is_absolute() {
                            return Err(at(
                                line,
                                format!(
                                    "state {item_name:?}: path {} must be absolute",
                                    path.display()
                                ),
                            ));
                        }
                        let exclude = item.exclude.unwrap_or_default();
                        for x in &exclude {
                            if x.starts_with('/') || x.split('/').any(|c| c == "..") || x.is_empty()
                            {
                                return Err(at(
                                    line,
                                    format!(
                                        "exclude {x:?} must be a relative path inside {}",
                                        path.display()
                                    ),
                                ));
                            }
                        }
                        StateKind::Path { path, exclude }
                    }
                    (None, Some(dump), Some(load)) => {
                        if item.exclude.is_some() {
                            return Err(at(
                                line,
                                format!(
                                    "state {item_name:?}: `exclude` applies to `path` items only"
                                ),
                            ));
                        }
                        StateKind::Dump { dump, load }
                    }
                    (None, Some(_), None) => {
                        return Err(at(
                            line,
                            format!("state {item_name:?} has `dump` but no `load`"),
                        ));
                    }
                    (None, None, Some(_)) => {
                        return Err(at(
                            line,
                            format!("state {item_name:?} has `load` but no `dump`"),
                        ));
                    }
                    (None, None, None) => {
                        return Err(at(
                            line,
                            format!("state {item_name:?} has neither `path` nor `dump`"),
                        ));
                    }
                };
                state.push(StateItem {
                    name: item_name,
                    kind,
                });
            }
            if state.is_empty() {
                return Err(at(
                    line,
                    format!("service {name} has no [[service.{name}.state]] items"),
                ));
            }
            let stop = command(svc.stop, "stop", line)?;
            let start = command(svc.start, "start", line)?;
            services.insert(
                name.clone(),
                Service {
                    name,
                    stop,
                    start,
                    state,
                },
            );
        }
        Ok(Self {
            repository: raw.repository,
            password_file: raw.password_file,
            services,
        })
    }

    /// Reads and parses a service file.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text).map_err(|e| match e {
            Error::Invalid(m) => Error::Invalid(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// A service by name, or an error listing the ones there are.
    pub fn service(&self, name: &str) -> Result<&Service> {
        self.services.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.services.keys().map(String::as_str).collect();
            Error::NotFound(format!(
                "no service {name:?} in the service file (it has: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
repository = "/var/backups/cairn"
password-file = "/etc/cairn/key"

[service.drupal]
stop  = "herd stop drupal"
start = ["herd", "start", "drupal"]

[[service.drupal.state]]
name    = "sites"
path    = "/var/lib/drupal/sites"
exclude = ["default/files/css", "default/files/js"]

[[service.drupal.state]]
name = "db"
dump = "mysqldump --single-transaction drupal"
load = "mysql drupal"
"#;

    #[test]
    fn the_documented_example_parses() {
        let f = ServiceFile::parse(GOOD).unwrap();
        let d = f.service("drupal").unwrap();
        assert_eq!(
            d.start,
            Some(CommandLine::Argv(vec![
                "herd".into(),
                "start".into(),
                "drupal".into()
            ]))
        );
        assert_eq!(d.state.len(), 2);
        assert!(
            matches!(&d.state[1].kind, StateKind::Dump { load: CommandLine::Shell(l), .. } if l == "mysql drupal")
        );
        assert_eq!(
            f.repository.as_deref(),
            Some(std::path::Path::new("/var/backups/cairn"))
        );
    }

    fn err(text: &str) -> String {
        ServiceFile::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn mistakes_name_their_line() {
        let unknown = GOOD.replace("exclude =", "exclud =");
        assert!(err(&unknown).contains("line 12"), "{}", err(&unknown));
        assert!(err(&unknown).contains("exclud"), "{}", err(&unknown));
        let neither = "[service.a]\n[[service.a.state]]\nname = \"x\"\n";
        assert!(
            err(neither).contains("line 2") && err(neither).contains("neither"),
            "{}",
            err(neither)
        );
        let no_load = "[service.a]\n[[service.a.state]]\nname = \"db\"\ndump = \"mysqldump\"\n";
        assert!(err(no_load).contains("no `load`"), "{}", err(no_load));
        let dup = "[service.a]\n[[service.a.state]]\nname = \"x\"\npath = \"/a\"\n[[service.a.state]]\nname = \"x\"\npath = \"/b\"\n";
        assert!(
            err(dup).contains("line 6") && err(dup).contains("two state items"),
            "{}",
            err(dup)
        );
        let relative = "[service.a]\n[[service.a.state]]\nname = \"x\"\npath = \"rel\"\n";
        assert!(err(relative).contains("absolute"), "{}", err(relative));
        let hostile = "[service.a]\n[[service.a.state]]\nname = \"../x\"\npath = \"/a\"\n";
        assert!(err(hostile).contains("plain file name"), "{}", err(hostile));
        let syntax = "[service.a\n";
        assert!(err(syntax).contains("line 1"), "{}", err(syntax));
    }
}
