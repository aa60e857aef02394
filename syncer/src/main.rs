//! `mop`: thin CLI over the `mop_syncer` library. Parses arguments, calls the
//! library, prints, and maps outcomes to exit codes.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;

use mop_syncer::apply::engine;
use mop_syncer::{diag::Diagnostic, plan, render, schema, source::Snapshot, sync, validate};

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
        /// Render only this cluster (a repository with clusters/<name>.yaml).
        /// Without it, every cluster is rendered into <out>/<cluster>/.
        #[arg(long)]
        cluster: Option<String>,
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
        /// Plan only this cluster (a repository with clusters/<name>.yaml);
        /// default: every cluster, grouped.
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Apply the repository once to every target: Grafana, the Mimir and Loki
    /// rulers, Kubernetes. Exit 0 when everything is applied, 1 when the repository
    /// is invalid or some change failed, 2 on usage errors. With --dry-run: 0 no
    /// changes, 2 changes, 1 error.
    Sync {
        /// The config repository (a directory).
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Apply this git revision instead of the working tree.
        #[arg(long)]
        rev: Option<String>,
        /// Print what would change against the live targets; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Prune even when it deletes more than `sync.max_prune_percent` of a target.
        #[arg(long)]
        allow_mass_prune: bool,
        #[command(flatten)]
        targets: TargetArgs,
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
    },
    /// Compare the live targets with the repository. Exit 0 in sync, 2 drifted, 1 error.
    Drift {
        /// The config repository (a directory).
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Compare with this git revision instead of the working tree.
        #[arg(long)]
        rev: Option<String>,
        #[command(flatten)]
        targets: TargetArgs,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Run the in-cluster syncer: fetch, validate, apply, report drift; serve
    /// /healthz, /readyz, /metrics, /status, /drift and the push webhook.
    Serve(Box<ServeArgs>),
    /// Write the JSON Schema of every config file kind into a directory.
    Schema {
        #[arg(long, short)]
        out: PathBuf,
    },
}

#[derive(clap::Args, Clone)]
struct TargetArgs {
    /// Reconcile only these targets (repeatable); default all.
    #[arg(long = "only", value_enum)]
    only: Vec<TargetArg>,
    /// The cluster to reconcile, in a repository with clusters/<name>.yaml: only
    /// its view of the repository (its endpoints, pins and tenants) is used.
    #[arg(long, env = "MOP_CLUSTER")]
    cluster: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetArg {
    Grafana,
    MimirRuler,
    LokiRuler,
    MimirAlertmanager,
    Kubernetes,
}

impl From<TargetArg> for render::Target {
    fn from(t: TargetArg) -> Self {
        match t {
            TargetArg::Grafana => render::Target::Grafana,
            TargetArg::MimirRuler => render::Target::MimirRuler,
            TargetArg::LokiRuler => render::Target::LokiRuler,
            TargetArg::MimirAlertmanager => render::Target::MimirAlertmanager,
            TargetArg::Kubernetes => render::Target::Kubernetes,
        }
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Remote repository to sync (https://, ssh://, git://, file://).
    #[arg(long, conflicts_with = "repo", required_unless_present = "repo")]
    git_url: Option<String>,
    /// Branch of --git-url to sync.
    #[arg(long, default_value = "main")]
    branch: String,
    /// Where the local mirror of --git-url is kept.
    #[arg(long, default_value = "/var/lib/mop/mirror")]
    mirror_dir: PathBuf,
    /// File holding an HTTPS access token (re-read on every fetch).
    #[arg(long)]
    git_token_file: Option<PathBuf>,
    /// User name sent with the token (GitHub: x-access-token, GitLab: oauth2).
    #[arg(long)]
    git_username: Option<String>,
    /// Private key for ssh:// URLs (re-read on every fetch).
    #[arg(long)]
    ssh_key_file: Option<PathBuf>,
    /// known_hosts file the server's ssh host key must be listed in. Required
    /// for ssh URLs (ssh://, user@host:path) unless
    /// --insecure-accept-any-host-key is given.
    #[arg(long)]
    ssh_known_hosts_file: Option<PathBuf>,
    /// Development only: fetch over ssh without checking the host key (a
    /// man-in-the-middle could serve a forged repository).
    #[arg(long, conflicts_with = "ssh_known_hosts_file")]
    insecure_accept_any_host_key: bool,
    /// A local directory to sync instead of a remote (development).
    #[arg(long)]
    repo: Option<PathBuf>,
    /// With --repo: re-sync when a file changes.
    #[arg(long, requires = "repo")]
    watch: bool,
    /// Address of the HTTP server.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: std::net::SocketAddr,
    /// File holding the push-webhook secret (GitHub/Gitea HMAC key, GitLab token).
    #[arg(long)]
    webhook_secret_file: Option<PathBuf>,
    /// Poll interval, overriding `sync.interval` of mop.yaml (e.g. 30s).
    #[arg(long, value_parser = parse_duration)]
    interval: Option<std::time::Duration>,
    #[arg(long)]
    allow_mass_prune: bool,
    #[command(flatten)]
    targets: TargetArgs,
    /// Elect a leader with a coordination.k8s.io Lease, so several replicas can run.
    #[arg(long)]
    leader_election: bool,
    #[arg(long, default_value = "mop-syncer")]
    lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// On SIGTERM, how long the sync in progress may take before it is abandoned
    /// (keep it below the pod's terminationGracePeriodSeconds).
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    shutdown_timeout: std::time::Duration,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = mop_syncer::model::Duration::parse(s)?;
    Ok(std::time::Duration::from_millis(d.millis))
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

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `plan`, `drift` and `sync --dry-run` exit 2 for "changes" (like `terraform
    // plan -detailed-exitcode`), so their errors exit 1; the other commands exit 2
    // on usage or I/O errors.
    let error_code = if matches!(
        cli.command,
        Command::Plan { .. } | Command::Drift { .. } | Command::Sync { dry_run: true, .. }
    ) {
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

/// The desired state of every cluster of a valid repository (one, keyed `None`,
/// in a repository without clusters/).
fn desired_of(repo: &mop_syncer::repo::Repo, cluster: Option<&str>) -> anyhow::Result<Views> {
    if !repo.is_multi_cluster() && cluster.is_none() {
        return Ok(vec![(None, String::new(), render::render(repo)?)]);
    }
    let mut views = Vec::new();
    for (key, view) in repo.cluster_views() {
        if cluster.is_some() && key.as_deref() != cluster {
            continue;
        }
        let env = repo
            .clusters
            .iter()
            .find(|c| Some(&c.key) == key.as_ref())
            .map(|c| c.environment().to_string())
            .unwrap_or_default();
        views.push((key, env, render::render(&view)?));
    }
    Ok(views)
}

/// Each cluster's key, environment and desired state.
type Views = Vec<(Option<String>, String, render::Desired)>;

/// `mop plan` of a repository with clusters: one plan per cluster of the head,
/// each against the same cluster in the base (against the base's only view when
/// the base was one cluster, so moving to clusters/ shows what changes where).
fn plan_clusters(
    head: Vec<(Option<String>, String, render::Desired)>,
    base: &[(Option<String>, String, render::Desired)],
    meta: &plan::Meta,
    format: PlanFormat,
) -> anyhow::Result<ExitCode> {
    let base_single = matches!(base, [(None, _, _)]);
    let plans: Vec<plan::ClusterPlan> = head
        .into_iter()
        .map(|(key, environment, desired)| {
            let b = if base_single {
                base.first()
            } else {
                base.iter().find(|(k, _, _)| *k == key)
            };
            plan::ClusterPlan {
                cluster: key.unwrap_or_default(),
                environment,
                plan: plan::diff(b.map(|(_, _, d)| d), &desired),
                new_cluster: b.is_none() && !meta.base_invalid,
            }
        })
        .collect();
    let text = match format {
        PlanFormat::Text => plan::format_text_clusters(
            &plans,
            meta,
            std::io::IsTerminal::is_terminal(&std::io::stdout()),
        ),
        PlanFormat::Markdown => plan::format_markdown_clusters(&plans, meta),
        PlanFormat::Json => plan::format_json_clusters(&plans, meta)?,
    };
    print!("{text}");
    Ok(if plans.iter().all(|c| c.plan.is_empty()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

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

/// Leaves `values` to the process's exit, which returns their memory at once. A
/// large repository's model is hundreds of thousands of small allocations made on
/// the worker threads; freeing them one by one on the main thread, after the
/// answer is printed, was about 50 ms of a 1.7 s `mop validate` of the realistic
/// benchmark repository (profiled). Only for commands that exit right after.
fn exit_without_freeing<T>(values: T) {
    std::mem::forget(values);
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if matches!(cli.command, Command::Sync { .. } | Command::Drift { .. }) {
        // On a terminal, progress lines are printed instead; logs carry warnings.
        // Otherwise (CI, a Job) every change is a structured log line.
        let tty = std::io::stderr().is_terminal();
        init_logging(!tty, if tty { "warn" } else { "info" });
    }
    match cli.command {
        Command::Validate { path, rev, format } => {
            let snap = load(&path, rev.as_deref())?;
            let outcome = validate::check(&snap);
            print_diagnostics(&outcome.diagnostics, format)?;
            let code = if outcome.repo.is_none() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
            if outcome.repo.is_some() && matches!(format, Format::Text) {
                let r = outcome.repo.as_ref().map(render::Summary::of);
                if let Some(s) = r {
                    println!("{}: valid ({s})", path.display());
                }
                if let Some(repo) = outcome.repo.as_ref().filter(|r| r.is_multi_cluster()) {
                    for (key, view) in repo.cluster_views() {
                        let c = repo.clusters.iter().find(|c| Some(&c.key) == key.as_ref());
                        println!(
                            "  cluster {} ({}): {} tenants, agent {}, gateway {}",
                            key.unwrap_or_default(),
                            c.map(|c| c.environment()).unwrap_or_default(),
                            view.tenants.len(),
                            view.versions.agent.version.value,
                            view.versions.gateway.version.value
                        );
                    }
                }
            }
            exit_without_freeing((snap, outcome));
            Ok(code)
        }
        Command::Render {
            path,
            rev,
            out,
            cluster,
        } => {
            let snap = load(&path, rev.as_deref())?;
            let outcome = validate::validate(&snap);
            let Some(repo) = outcome.repo else {
                print_diagnostics(&outcome.diagnostics, Format::Text)?;
                return Ok(ExitCode::from(1));
            };
            print_diagnostics(&outcome.diagnostics, Format::Text)?;
            let repo = match (cluster, repo.is_multi_cluster()) {
                (Some(c), _) => mop_syncer::serve::run::scope_to_cluster(repo, Some(&c))
                    .map_err(|e| anyhow::anyhow!(e.replace("mop serve", "mop render")))?,
                (None, false) => repo,
                (None, true) => {
                    let mut views = Vec::new();
                    for (key, view) in repo.cluster_views() {
                        views.push((key.unwrap_or_default(), render::render(&view)?));
                    }
                    for (key, n) in render::write_cluster_dirs(&views, &out)? {
                        println!("rendered {n} resources into {}", out.join(&key).display());
                    }
                    return Ok(ExitCode::SUCCESS);
                }
            };
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
            cluster,
        } => {
            let head_snap = Snapshot::from_git(&path, &head)?;
            let base_snap = Snapshot::from_git(&path, &base);
            let mut cache = match &base_snap {
                Ok(b) => validate::ParseCache::for_plan(b, &head_snap),
                Err(_) => validate::ParseCache::default(),
            };
            // Files whose content was parsed for one side are not parsed again for
            // the other (the cache); the two sides then render at the same time.
            let head_outcome = validate::validate_cached(&head_snap, &mut cache);
            let Some(head_repo) = head_outcome.repo else {
                // On stdout, with the diagnostics: printed on stderr it could
                // land after them in a CI log that merges both streams.
                println!("head {head} is invalid; no plan:");
                print_diagnostics(&head_outcome.diagnostics, Format::Text)?;
                return Ok(ExitCode::from(1));
            };
            let base_snap = base_snap?;
            let base_outcome = validate::validate_cached(&base_snap, &mut cache);
            // Freed beside the rendering rather than before it: the parsed files of
            // both commits are hundreds of thousands of allocations.
            std::thread::spawn(move || drop(cache));
            // An invalid base (e.g. the PR fixes a broken main) plans against nothing
            // rather than failing the review; the output says so.
            let base_invalid = base_outcome.repo.is_none();
            let (head_views, base_views) = rayon::join(
                || desired_of(&head_repo, cluster.as_deref()),
                || {
                    base_outcome
                        .repo
                        .as_ref()
                        .map(|r| desired_of(r, cluster.as_deref()))
                        .transpose()
                },
            );
            let mut head_views = head_views?;
            let base_views = base_views?.unwrap_or_default();
            let (head_rev, base_rev) = (head_snap.revision, base_snap.revision);
            let meta = plan::Meta {
                base: base_rev.unwrap_or(base),
                head: head_rev.unwrap_or(head),
                base_invalid,
            };
            if cluster.is_some() && head_views.is_empty() {
                anyhow::bail!(
                    "--cluster {}: the head revision has no clusters/{}.yaml",
                    cluster.as_deref().unwrap_or_default(),
                    cluster.as_deref().unwrap_or_default()
                );
            }
            if head_views.len() != 1 || head_views[0].0.is_some() {
                return plan_clusters(head_views, &base_views, &meta, format);
            }
            let Some((_, _, head_desired)) = head_views.pop() else {
                anyhow::bail!("the head revision renders no cluster");
            };
            let base_desired = base_views.into_iter().next().map(|(_, _, d)| d);
            let p = plan::diff(base_desired.as_ref(), &head_desired);
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
            let code = if p.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
            exit_without_freeing((head_repo, base_outcome, head_desired, base_desired, p));
            Ok(code)
        }
        Command::Sync {
            path,
            rev,
            dry_run,
            allow_mass_prune,
            targets,
            format,
        } => {
            let Some(report) =
                reconcile_path(&path, rev.as_deref(), &targets, |o| engine::Options {
                    allow_mass_prune,
                    dry_run,
                    ..o
                })?
            else {
                return Ok(ExitCode::from(1));
            };
            if dry_run {
                print_plan(&report, format)?;
                return Ok(if report.failed() > 0 {
                    ExitCode::from(1)
                } else if report.plan().is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(2)
                });
            }
            match format {
                PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                _ => print!("{}", summary(&report)),
            }
            Ok(if report.converged() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Drift {
            path,
            rev,
            targets,
            format,
        } => {
            let Some(report) = reconcile_path(&path, rev.as_deref(), &targets, |o| {
                engine::Options { dry_run: true, ..o }
            })?
            else {
                return Ok(ExitCode::from(1));
            };
            let drift = mop_syncer::serve::status::drift_of(&report);
            let unread: Vec<String> = report
                .targets
                .iter()
                .flat_map(|t| {
                    t.observe_failures.iter().map(move |f| {
                        format!(
                            "{}{}: {}",
                            t.target,
                            f.tenant
                                .as_deref()
                                .map(|k| format!(" (tenant {k})"))
                                .unwrap_or_default(),
                            f.error
                        )
                    })
                })
                .collect();
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "revision": report.revision,
                        "drifted": drift.len(),
                        "objects": drift,
                        "unreadable": unread,
                    }))?
                ),
                Format::Text => print!("{}", drift_table(&drift, &unread)),
            }
            Ok(if !unread.is_empty() {
                ExitCode::from(1)
            } else if drift.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Serve(args) => serve(*args),
        Command::Schema { out } => {
            schema::write_all(&out)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// The validated repository and its desired state, or `None` after printing why
/// it is invalid.
fn valid_desired(
    path: &std::path::Path,
    rev: Option<&str>,
    cluster: Option<&str>,
) -> anyhow::Result<Option<(mop_syncer::repo::Repo, render::Desired)>> {
    let snap = load(path, rev)?;
    let outcome = validate::validate(&snap);
    print_diagnostics(&outcome.diagnostics, Format::Text)?;
    let Some(repo) = outcome.repo else {
        eprintln!("the repository is invalid; nothing was applied");
        return Ok(None);
    };
    let repo = mop_syncer::serve::run::scope_to_cluster(repo, cluster)
        .map_err(|e| anyhow::anyhow!(e.replace("start mop serve with", "give")))?;
    let desired = render::render(&repo)?;
    Ok(Some((repo, desired)))
}

/// Validates and renders the repository at `path` and reconciles it once with
/// the options of its `mop.yaml` as `opts` adjusts them; `None` when the
/// repository is invalid (its errors are printed).
fn reconcile_path(
    path: &std::path::Path,
    rev: Option<&str>,
    targets: &TargetArgs,
    opts: impl FnOnce(engine::Options) -> engine::Options,
) -> anyhow::Result<Option<engine::Report>> {
    let Some((repo, desired)) = valid_desired(path, rev, targets.cluster.as_deref())? else {
        return Ok(None);
    };
    let opts = opts(engine::Options::from_policy(&repo.platform.sync));
    let report = runtime()?.block_on(reconcile_once(&repo, &desired, targets, &opts))?;
    Ok(Some(report))
}

/// Connects the selected targets. A Kubernetes client is made when the
/// Kubernetes target is selected or a credential is a Kubernetes Secret.
async fn connections(
    repo: &mop_syncer::repo::Repo,
    targets: &TargetArgs,
) -> anyhow::Result<sync::Connections> {
    let mut conn = sync::Connections {
        only: targets
            .only
            .iter()
            .map(|t| render::Target::from(*t))
            .collect(),
        ..sync::Connections::default()
    };
    let needs_secret = matches!(
        repo.platform.grafana.admin_password,
        mop_syncer::model::SecretRef::Secret(_)
    ) && conn.selected(render::Target::Grafana);
    let alerting_secrets = conn.selected(render::Target::MimirAlertmanager)
        && mop_syncer::render::alertmanager::uses_kubernetes_secrets(repo);
    if conn.selected(render::Target::Kubernetes) || needs_secret || alerting_secrets {
        let why = if conn.selected(render::Target::Kubernetes) {
            "leave the kubernetes target out with --only"
        } else if alerting_secrets {
            "alerting.yaml references Kubernetes Secrets; leave the mimir-alertmanager target out with --only"
        } else {
            "mop.yaml's grafana.admin_password is a Kubernetes Secret reference; \
             outside the cluster use `admin_password: {file: /path/to/password}`"
        };
        conn.kube = Some(kube::Client::try_default().await.map_err(|e| {
            anyhow::anyhow!("cannot reach Kubernetes ({e}); set KUBECONFIG, run in a pod, or {why}")
        })?);
    }
    Ok(conn)
}

async fn reconcile_once(
    repo: &mop_syncer::repo::Repo,
    desired: &render::Desired,
    targets: &TargetArgs,
    opts: &engine::Options,
) -> anyhow::Result<engine::Report> {
    let conn = connections(repo, targets).await?;
    let tty = std::io::stderr().is_terminal();
    let progress = move |t: &render::Target, c: &engine::ChangeResult| {
        if tty {
            eprintln!("{}", change_line(t, c));
        } else {
            tracing::info!(target_name = %t, id = %c.change.id, action = ?c.change.action, outcome = ?c.outcome, "change");
        }
    };
    Ok(sync::reconcile(repo, desired, &conn, opts, Vec::new(), &progress).await?)
}

fn change_line(_t: &render::Target, c: &engine::ChangeResult) -> String {
    let sign = match c.change.action {
        plan::Action::Create => '+',
        plan::Action::Update => '~',
        plan::Action::Delete => '-',
    };
    let what = match &c.outcome {
        engine::Outcome::Applied => "done".to_string(),
        engine::Outcome::Planned => "planned".to_string(),
        engine::Outcome::Failed(e) => format!("FAILED: {e}"),
        engine::Outcome::Skipped(why) => format!("skipped: {why}"),
        engine::Outcome::Held(why) => format!("held: {why}"),
    };
    format!("  {sign} {} … {what}", c.change.id)
}

fn print_plan(report: &engine::Report, format: PlanFormat) -> anyhow::Result<()> {
    let p = report.plan();
    let meta = plan::Meta {
        base: "live".to_string(),
        head: report
            .revision
            .clone()
            .unwrap_or_else(|| "working tree".to_string()),
        base_invalid: false,
    };
    let text = match format {
        PlanFormat::Text => plan::format_text(&p, &meta, std::io::stdout().is_terminal()),
        PlanFormat::Markdown => plan::format_markdown(&p, &meta),
        PlanFormat::Json => plan::format_json(&p, &meta)?,
    };
    print!("{text}");
    for t in &report.targets {
        for f in &t.observe_failures {
            eprintln!(
                "warning: {}{} could not be read, its changes are unknown: {}",
                t.target,
                f.tenant
                    .as_deref()
                    .map(|k| format!(" (tenant {k})"))
                    .unwrap_or_default(),
                f.error
            );
        }
    }
    Ok(())
}

fn summary(report: &engine::Report) -> String {
    let mut out = String::new();
    for t in &report.targets {
        let skipped = t.count(|o| matches!(o, engine::Outcome::Skipped(_)));
        out.push_str(&format!(
            "{}: {} applied, {} failed, {} skipped ({} live objects before)\n",
            t.target,
            t.applied(),
            t.failed(),
            skipped,
            t.live_objects
        ));
        for f in &t.observe_failures {
            out.push_str(&format!(
                "  ! cannot read{}: {} (nothing of it was changed)\n",
                f.tenant
                    .as_deref()
                    .map(|k| format!(" tenant {k}"))
                    .unwrap_or_default(),
                f.error
            ));
        }
        if let Some(why) = &t.prune_refused {
            out.push_str(&format!("  ! {why}\n"));
        }
        for c in &t.changes {
            if matches!(
                c.outcome,
                engine::Outcome::Failed(_) | engine::Outcome::Skipped(_) | engine::Outcome::Held(_)
            ) {
                out.push_str(&format!("{}\n", change_line(&t.target, c)));
            }
        }
    }
    out.push_str(&format!(
        "Sync of {}: {} applied, {} failed; {}.\n",
        report.revision.as_deref().unwrap_or("the working tree"),
        report.applied(),
        report.failed(),
        if report.converged() {
            "everything is as the repository says"
        } else {
            "NOT converged"
        }
    ));
    out
}

fn drift_table(drift: &[mop_syncer::serve::status::Drifted], unread: &[String]) -> String {
    let mut out = String::new();
    for u in unread {
        out.push_str(&format!("cannot read {u}\n"));
    }
    if drift.is_empty() {
        out.push_str("No drift: the live targets match the repository.\n");
        return out;
    }
    let rows: Vec<[String; 5]> = drift
        .iter()
        .map(|d| {
            [
                d.target.clone(),
                d.tenant.clone().unwrap_or_else(|| "-".into()),
                d.kind.clone(),
                d.name.clone(),
                d.action.clone(),
            ]
        })
        .collect();
    let head = ["TARGET", "TENANT", "KIND", "NAME", "TO FIX"];
    let mut w = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            l.push_str(&format!("{c:<width$}  ", width = w[i]));
        }
        format!("{}\n", l.trim_end())
    };
    out.push_str(&line(head));
    for (r, d) in rows.iter().zip(drift) {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
        for detail in &d.details {
            out.push_str(&format!("    {detail}\n"));
        }
        if let Some(why) = &d.held {
            out.push_str(&format!("    held: {why}\n"));
        }
    }
    out.push_str(&format!("\n{} object(s) drifted.\n", drift.len()));
    out
}

fn init_logging(json: bool, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    use mop_syncer::serve::{run, server, status};
    use std::sync::Arc;
    use tokio::sync::{mpsc, watch};

    // Structured logs for the cluster's log pipeline; readable ones on a terminal.
    init_logging(!std::io::stderr().is_terminal(), "info");
    runtime()?.block_on(async move {
        let only: std::collections::BTreeSet<render::Target> =
            a.targets.only.iter().map(|t| render::Target::from(*t)).collect();
        let wants_kube = only.is_empty() || only.contains(&render::Target::Kubernetes);
        let kube = if wants_kube || a.leader_election {
            Some(kube::Client::try_default().await.map_err(|e| {
                anyhow::anyhow!("cannot reach Kubernetes ({e}); set KUBECONFIG or run in a pod")
            })?)
        } else {
            kube::Client::try_default().await.ok()
        };
        let connections = sync::Connections {
            kube: kube.clone(),
            only,
            ..sync::Connections::default()
        };
        let (trigger_tx, trigger_rx) = mpsc::channel(1);
        let mut _watcher = None;
        let source = match (&a.git_url, &a.repo) {
            (Some(url), _) => {
                use mop_syncer::serve::git::{Auth, GitSource, GitSourceConfig};
                let auth = match (&a.git_token_file, &a.ssh_key_file) {
                    (Some(t), _) => Auth::Token {
                        token_file: t.clone(),
                        username: a.git_username.clone(),
                    },
                    (None, Some(k)) => Auth::SshKey {
                        private_key: k.clone(),
                        passphrase_file: None,
                        known_hosts: a.ssh_known_hosts_file.clone(),
                        insecure_accept_any_host_key: a.insecure_accept_any_host_key,
                        username: a.git_username.clone(),
                    },
                    (None, None) => Auth::None,
                };
                let g = GitSource::open(GitSourceConfig {
                    url: url.clone(),
                    branch: a.branch.clone(),
                    mirror_dir: a.mirror_dir.clone(),
                    auth,
                })?;
                run::Source::Git(Arc::new(std::sync::Mutex::new(g)))
            }
            (None, Some(dir)) => {
                if a.watch {
                    _watcher = Some(run::watch_dir(dir, trigger_tx.clone()).map_err(anyhow::Error::msg)?);
                }
                run::Source::Dir(dir.clone())
            }
            (None, None) => anyhow::bail!("give --git-url or --repo"),
        };
        let webhook: Option<Arc<server::WebhookCheck>> = a.webhook_secret_file.clone().map(|f| {
            let branch = a.branch.clone();
            Arc::new(move |h: &axum::http::HeaderMap, body: &[u8]| {
                run::check_webhook(&f, &branch, h, body)
            }) as Arc<server::WebhookCheck>
        });
        let state = status::State::default();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let listener = tokio::net::TcpListener::bind(a.listen).await?;
        tracing::info!(listen = %listener.local_addr()?, "serving /healthz /readyz /metrics /status /drift /webhook");
        let lease_ns = a.lease_namespace.clone().unwrap_or_else(|| "default".into());
        // The Lease is released only after the sync loop stopped, so the next
        // leader never applies while this one still does.
        let (release_tx, mut release_rx) = watch::channel(false);
        let (leader_rx, elector) = if a.leader_election {
            use mop_syncer::serve::leader::{LeaderConfig, LeaderElector};
            let client = kube
                .clone()
                .ok_or_else(|| anyhow::anyhow!("leader election needs Kubernetes"))?;
            let ns = lease_ns.clone();
            let id = a
                .identity
                .clone()
                .unwrap_or_else(|| format!("mop-{}", std::process::id()));
            let e = LeaderElector::new(client, LeaderConfig::new(&a.lease_name, ns, id));
            let rx = e.subscribe();
            let handle = tokio::spawn(e.run(async move {
                let _ = release_rx.wait_for(|r| *r).await;
            }));
            (rx, Some(handle))
        } else {
            (watch::channel(true).1, None)
        };
        // A verified push goes to the local loop on the leader, and through the
        // sync-request ConfigMap to the leader on a standby.
        let sink: server::TriggerSink = match (&kube, a.leader_election) {
            (Some(client), true) => {
                let ns = lease_ns.clone();
                tokio::spawn(mop_syncer::serve::handoff::watch_requests(
                    client.clone(),
                    ns.clone(),
                    leader_rx.clone(),
                    trigger_tx.clone(),
                ));
                let (client, leader, tx) = (client.clone(), leader_rx.clone(), trigger_tx.clone());
                Arc::new(move |t| {
                    if *leader.borrow() {
                        // A full channel already holds a pending sync.
                        let _ = tx.try_send(t);
                    } else {
                        let (client, ns) = (client.clone(), ns.clone());
                        tokio::spawn(async move {
                            if let Err(e) = mop_syncer::serve::handoff::request(&client, &ns, &t).await {
                                tracing::warn!(error = %e, "cannot pass the webhook to the leader");
                            }
                        });
                    }
                })
            }
            _ => {
                let tx = trigger_tx.clone();
                Arc::new(move |t| {
                    let _ = tx.try_send(t);
                })
            }
        };
        let app = server::router(state.clone(), sink, webhook);
        let mut server_shutdown = shutdown_rx.clone();
        let http = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = server_shutdown.wait_for(|s| *s).await;
                })
                .await
        });
        let cfg = run::LoopConfig {
            source,
            connections,
            interval: a.interval,
            allow_mass_prune: a.allow_mass_prune,
            leader_election: a.leader_election,
            cluster: a.targets.cluster.clone(),
        };
        state.set_cluster(a.targets.cluster.clone());
        let sync_loop = tokio::spawn(run::run(cfg, state, trigger_rx, leader_rx, shutdown_rx));
        shutdown_signal().await;
        tracing::info!("shutting down: finishing the current sync");
        let _ = shutdown_tx.send(true);
        // Within Kubernetes' default 30 s grace period: a sync stuck on a hung
        // target is abandoned (safe between requests; the next leader re-plans
        // from live state) so the Lease is still released, not left to expire.
        let mut sync_loop = sync_loop;
        if tokio::time::timeout(a.shutdown_timeout, &mut sync_loop).await.is_err() {
            tracing::warn!(timeout = ?a.shutdown_timeout, "the sync did not finish in time; abandoning it");
            sync_loop.abort();
            let _ = sync_loop.await;
        }
        let _ = release_tx.send(true);
        if let Some(h) = elector {
            // Releasing the lease lets the other replica take over at once.
            let _ = h.await;
        }
        let _ = http.await;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
