//! `mop`: thin CLI over the `mop_syncer` library. Parses arguments, calls the
//! library, prints, and maps outcomes to exit codes.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use mop_syncer::{diag::Diagnostic, plan, render, schema, source::Snapshot, validate};

#[derive(Parser)]
#[command(
    name = "mop",
    version,
    about = "MOP: GitOps for a multi-tenant Grafana/Mimir/Loki/Tempo/Pyroscope platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a config repository; report every problem. Exit 0 valid, 1 invalid, 2 usage/I/O error.
    Validate {
        /// The config repository (a directory).
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Validate this git revision instead of the working tree.
        #[arg(long)]
        rev: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Render the desired state of every target into files.
    Render {
        /// The config repository (a directory).
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Render this git revision instead of the working tree.
        #[arg(long)]
        rev: Option<String>,
        /// Output directory (replaced).
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Show what a change between two git revisions would do. Exit 0 no changes,
    /// 2 changes, 1 invalid head or error.
    Plan {
        /// The config repository: a git work tree, a bare repository, or a subdirectory of one.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// The revision the change starts from (e.g. origin/main).
        #[arg(long)]
        base: String,
        /// The revision with the change.
        #[arg(long, default_value = "HEAD")]
        head: String,
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
    },
    /// Write the JSON Schema of every config file kind into a directory.
    Schema {
        #[arg(long, short)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum PlanFormat {
    Text,
    Markdown,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `plan` exits 2 for "changes" (like `terraform plan -detailed-exitcode`), so its
    // errors exit 1; the other commands exit 2 on usage or I/O errors.
    let error_code = if matches!(cli.command, Command::Plan { .. }) {
        1
    } else {
        2
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(error_code)
        }
    }
}

fn load(path: &std::path::Path, rev: Option<&str>) -> anyhow::Result<Snapshot> {
    Ok(match rev {
        Some(r) => Snapshot::from_git(path, r)?,
        None => Snapshot::from_dir(path)?,
    })
}

/// The desired state at a git revision, or its validation errors. Files whose
/// content was parsed for the other side of the plan are not read or parsed again.
fn desired_at(
    path: &std::path::Path,
    rev: &str,
    cache: &mut validate::ParseCache,
) -> anyhow::Result<AtRevision> {
    let snap = Snapshot::from_git(path, rev)?;
    let outcome = validate::validate_cached(&snap, cache);
    match outcome.repo {
        Some(repo) => Ok((snap.revision, Ok(render::render(&repo)?))),
        None => Ok((snap.revision, Err(outcome.diagnostics))),
    }
}

/// A revision's commit id, and its desired state or its validation errors.
type AtRevision = (Option<String>, Result<render::Desired, Vec<Diagnostic>>);

fn print_diagnostics(diags: &[Diagnostic], format: Format) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Text => {
            for d in diags {
                writeln!(out, "{d}")?;
            }
            let errors = diags.iter().filter(|d| d.is_error()).count();
            let warnings = diags.len() - errors;
            if errors > 0 {
                writeln!(out, "\n{errors} error(s), {warnings} warning(s)")?;
            }
        }
        Format::Json => {
            serde_json::to_writer_pretty(
                &mut out,
                &serde_json::json!({
                    "valid": !diags.iter().any(Diagnostic::is_error),
                    "diagnostics": diags,
                }),
            )?;
            writeln!(out)?;
        }
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { path, rev, format } => {
            let snap = load(&path, rev.as_deref())?;
            let outcome = validate::validate(&snap);
            print_diagnostics(&outcome.diagnostics, format)?;
            if outcome.repo.is_none() {
                return Ok(ExitCode::from(1));
            }
            if matches!(format, Format::Text) {
                let r = outcome.repo.as_ref().map(render::Summary::of);
                if let Some(s) = r {
                    println!("{}: valid ({s})", path.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Render { path, rev, out } => {
            let snap = load(&path, rev.as_deref())?;
            let outcome = validate::validate(&snap);
            let Some(repo) = outcome.repo else {
                print_diagnostics(&outcome.diagnostics, Format::Text)?;
                return Ok(ExitCode::from(1));
            };
            print_diagnostics(&outcome.diagnostics, Format::Text)?;
            let desired = render::render(&repo)?;
            let n = render::write_dir(&desired, &out)?;
            println!("rendered {n} resources into {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            path,
            base,
            head,
            format,
        } => {
            let mut cache = validate::ParseCache::default();
            let (head_rev, head_desired) = desired_at(&path, &head, &mut cache)?;
            let head_desired = match head_desired {
                Ok(d) => d,
                Err(diags) => {
                    eprintln!("head {head} is invalid; no plan:");
                    print_diagnostics(&diags, Format::Text)?;
                    return Ok(ExitCode::from(1));
                }
            };
            // An invalid base (e.g. the PR fixes a broken main) plans against nothing
            // rather than failing the review; the output says so.
            let (base_rev, base_desired) = desired_at(&path, &base, &mut cache)?;
            drop(cache);
            let base_desired = base_desired.ok();
            let p = plan::diff(base_desired.as_ref(), &head_desired);
            let meta = plan::Meta {
                base: base_rev.unwrap_or(base),
                head: head_rev.unwrap_or(head),
                base_invalid: base_desired.is_none(),
            };
            let text = match format {
                PlanFormat::Text => plan::format_text(
                    &p,
                    &meta,
                    std::io::IsTerminal::is_terminal(&std::io::stdout()),
                ),
                PlanFormat::Markdown => plan::format_markdown(&p, &meta),
                PlanFormat::Json => plan::format_json(&p, &meta)?,
            };
            print!("{text}");
            Ok(if p.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Schema { out } => {
            schema::write_all(&out)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
