//! `cairn`: parse the command line, dispatch to one command, turn errors into exit codes.
//! All logic lives in `cairn-store`; this crate only talks to people.

mod commands;
mod password;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes (documented in the README).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any error not listed below.
    pub const ERROR: u8 = 1;
    /// Usage error (bad flags).
    pub const USAGE: u8 = 2;
    /// Finished, but some files could not be read or restored (each was reported).
    pub const PARTIAL: u8 = 3;
    /// No repository at the given location.
    pub const NO_REPO: u8 = 10;
    /// The repository is locked by another process.
    pub const LOCKED: u8 = 11;
    /// Wrong password.
    pub const WRONG_PASSWORD: u8 = 12;
}

/// cairn: encrypted, deduplicated snapshots of a service's state, addressed by revision.
///
/// Snapshot directory trees and dump streams (mysqldump ...) before every upgrade, label them
/// SERVICE@REVISION, and restore the state of any revision later. Every byte in the repository
/// is encrypted and authenticated.
#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Repository directory.
    #[arg(
        short = 'r',
        long = "repo",
        env = "CAIRN_REPO",
        global = true,
        value_name = "DIR"
    )]
    repo: Option<PathBuf>,
    /// Read the password from this file (first line). Also CAIRN_PASSWORD_FILE; CAIRN_PASSWORD
    /// holds the password itself. Without either, cairn asks on the terminal.
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Service file for `cairn state` (default /etc/cairn/cairn.toml). Other commands take
    /// its `repository` and `password_file` when --repo and CAIRN_REPO are not given.
    #[arg(long, env = "CAIRN_CONFIG", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print only errors and warnings; no progress bars.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new repository.
    Init(commands::init::Args),
    /// Snapshot paths and/or one stream (stdin or a command's output).
    Backup(commands::backup::Args),
    /// List snapshots.
    Snapshots(commands::snapshots::Args),
    /// List the files in a snapshot.
    Ls(commands::ls::Args),
    /// Restore a snapshot (or part of it) into a directory.
    Restore(commands::restore::Args),
    /// What the repository and each snapshot cost, and what deleting one would free.
    Stats(commands::stats::Args),
    /// What changed between two snapshots, and what the second added to the repository.
    Diff(commands::diff::Args),
    /// Verify the repository: structure always, data with --read-data*.
    Check(commands::check::Args),
    /// Remove snapshots by policy (data goes with `prune` or --prune).
    Forget(commands::forget::Args),
    /// Delete data no snapshot needs, without blocking backups.
    Prune(commands::prune::Args),
    /// Write one file of a snapshot to standard output.
    Dump(commands::dump::Args),
    /// Maintain the index (a cache of what packs and snapshots say).
    Index(commands::index::Args),
    /// After damage: set damaged packs and snapshots aside, keep what is whole, name what is lost.
    Repair(commands::repair::Args),
    /// Manage the key files that open the repository.
    Key(commands::key::Args),
    /// Dump, load and move a service's state between revisions (see the service file).
    State(commands::state::Args),
    /// Run the whole story on a temporary repository: dump, upgrade, transition, roll back.
    Demo(commands::demo::Args),
}

/// Has glibc keep freed memory for reuse instead of handing it back at once. A delta backup
/// or restore allocates and frees buffers of megabytes (runs, prefixes, anchor tables)
/// again and again; by default each is a fresh mapping whose pages all fault in (a delta
/// backup of the corpus dump spent a third of its CPU time in the kernel). One arena keeps
/// the worker threads from each growing its own heap of such buffers.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) if broken_pipe(&e) && stdout_gone() => {
            // `cairn ls | head`: the reader had what it wanted.
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("cairn: {}", ui::chain(&e));
            ExitCode::from(code_of(&e))
        }
    }
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Whether standard output is a pipe whose reader is gone. A broken pipe elsewhere (a load
/// program that died) is an error to report; to our own reader it is the end of the output.
fn stdout_gone() -> bool {
    let mut p = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLERR != 0 }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let g = commands::Global {
        repo: cli.repo,
        password_file: cli.password_file,
        quiet: cli.quiet,
        config: cli.config,
    };
    // The state commands read the service file themselves (and need it); the others take
    // its repository only when none is given otherwise.
    let g = match &cli.command {
        Command::State(_) | Command::Demo(_) => g,
        _ => g.with_service_file()?,
    };
    match cli.command {
        Command::Init(a) => commands::init::run(&g, a),
        Command::Backup(a) => commands::backup::run(&g, a),
        Command::Snapshots(a) => commands::snapshots::run(&g, a),
        Command::Ls(a) => commands::ls::run(&g, a),
        Command::Restore(a) => commands::restore::run(&g, a),
        Command::Dump(a) => commands::dump::run(&g, a),
        Command::Stats(a) => commands::stats::run(&g, a),
        Command::Check(a) => commands::check::run(&g, a),
        Command::Forget(a) => commands::forget::run(&g, a),
        Command::Prune(a) => commands::prune::run(&g, a),
        Command::Diff(a) => commands::diff::run(&g, a),
        Command::Index(a) => commands::index::run(&g, a),
        Command::Repair(a) => commands::repair::run(&g, a),
        Command::Key(a) => commands::key::run(&g, a),
        Command::State(a) => commands::state::run(&g, a),
        Command::Demo(a) => commands::demo::run(&g, a),
    }
}

fn code_of(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(se) = cause.downcast_ref::<cairn_store::Error>() {
            return match se {
                cairn_store::Error::NoRepository(_) => exit::NO_REPO,
                cairn_store::Error::Locked(_) => exit::LOCKED,
                cairn_store::Error::WrongPassword => exit::WRONG_PASSWORD,
                _ => exit::ERROR,
            };
        }
    }
    exit::ERROR
}
