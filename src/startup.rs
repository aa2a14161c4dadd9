//! Building the application: open the store, start the metrics reporter, prepare the runner
//! and the run slots, and start the channel registry wired to a front end (the console or the
//! Discord gateway). Also the orderly stop. The binary and the tests use the same code.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr};
use actors::channel::{ChannelDeps, UsageGate, WarmPool};
use actors::claude::{process_start_time, ClaudeRunner, ProcessLog};
use actors::conversation::{ChannelProfile, ConversationRef};
use actors::discord::{
    DiscordChannel, DiscordConnection, DiscordGateway, FlushOutbound, GatewayError, GatewaySetup,
};
use actors::frontend::FrontEnd;
use actors::limits::{Ledger, Limits};
use actors::metrics::{AttachGateway, EmitMetrics, MetricsActor};
use actors::registry::{CancelRuns, ChannelRegistry, RestoreInbox};
use actors::schedule::{Scheduler, StartSchedules};
use actors::shutdown::Shutdown;
use actors::store::{
    open_pool, Checkpoint, ForgetProcess, ListUndelivered, LoadLedger, PruneDelivered,
    RecordProcess, SessionStoreActor, TakeLeftProcesses,
};
use actors::time::unix_ms;
use actors::time::Clock;
use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::settings::Settings;

/// The core of the service: store, metrics, runner, run slots and channel profiles.
pub struct Application {
    settings: Settings,
    store: Addr<SessionStoreActor>,
    metrics: Addr<MetricsActor>,
    runner: ClaudeRunner,
    run_slots: Arc<Semaphore>,
    channels: Vec<Arc<ChannelProfile>>,
    /// Spend and message limits, with their ledger.
    limits: Arc<Limits>,
    /// The stop every part listens to.
    shutdown: Shutdown,
    /// The scheduler's clock.
    clock: Clock,
}

/// In a debug build (the tests'), the file `COORDINATOR_TEST_CLOCK_FILE` names sets the
/// scheduler's clock (see [`Clock::from_file`]), so a test brings a schedule's minute instead
/// of sleeping to it. A release build always reads the system clock.
fn scheduler_clock() -> Clock {
    match std::env::var_os("COORDINATOR_TEST_CLOCK_FILE") {
        Some(path) if cfg!(debug_assertions) => {
            warn!("the scheduler's clock is read from COORDINATOR_TEST_CLOCK_FILE (a test build)");
            Clock::from_file(path.into())
        }
        _ => Clock::System,
    }
}

impl Application {
    /// Opens (creating and migrating) the session store and prepares everything a front end
    /// needs. Must run inside an actix system.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store_config = settings.store.to_config();
        let mut profiles: Vec<ChannelProfile> =
            settings.channel.iter().map(|c| c.profile.clone()).collect();
        // File-system work happens on a blocking thread, not on the actors' thread.
        let sandbox_settings = settings.clone();
        let (pool, profiles, sandbox) = actix_rt::task::spawn_blocking(move || {
            // Absolute project directories, so a session's stored cwd means the same thing
            // whichever directory the service is started from.
            for p in &mut profiles {
                if let Ok(abs) = std::fs::canonicalize(&p.project_dir) {
                    p.project_dir = abs;
                }
            }
            let pool = open_pool(&store_config)?;
            let sandbox = crate::sandboxing::choose(&sandbox_settings, &profiles);
            anyhow::Ok((pool, profiles, sandbox))
        })
        .await
        .context("the store's start-up thread failed")??;
        let sandbox = match sandbox.context("claude.sandbox = \"bubblewrap\"")? {
            (Some(s), _) => {
                info!(
                    hidden = s.hidden().len(),
                    "each CLI process runs sealed in a bubblewrap sandbox"
                );
                Some(s)
            }
            (None, Some(why)) => {
                warn!(reason = %why, "NO SANDBOX: claude.sandbox = \"auto\" and bubblewrap does not work here, so every CLI process sees what this service's user sees (its state, secrets and every channel's project)");
                None
            }
            (None, None) => {
                warn!("no sandbox (claude.sandbox = \"none\"): every CLI process sees what this service's user sees");
                None
            }
        };
        let store = SessionStoreActor::start(pool, settings.store.pool_size as usize);
        let metrics = MetricsActor::new(settings.metrics.interval(), store.clone()).start();
        let ledger = if settings.limits.is_active() {
            let windows = settings.limits.windows(unix_ms());
            store
                .send(LoadLedger { windows })
                .await
                .context("the store stopped")?
                .context("could not read the spend and messages the limits count")?
        } else {
            Ledger::default()
        };
        let processes = Arc::new(StoreProcessLog {
            store: store.clone(),
        });
        Ok(Self {
            runner: ClaudeRunner::new(settings.claude.clone())
                .with_process_log(processes)
                .with_sandbox(sandbox),
            run_slots: Arc::new(Semaphore::new(settings.claude.max_concurrent_runs)),
            channels: profiles.into_iter().map(Arc::new).collect(),
            limits: Arc::new(Limits::new(settings.limits.clone(), ledger)),
            store,
            metrics,
            settings,
            shutdown: Shutdown::new(),
            clock: scheduler_clock(),
        })
    }

    /// Starts the channel registry, sending replies, progress and permission requests to a
    /// front end.
    pub fn start_registry(&self, front: FrontEnd) -> Addr<ChannelRegistry> {
        self.registry_starter(false)(front)
    }

    /// A function that starts the registry once the front end exists; with `restore`, the
    /// registry first queues again what the inbox holds unanswered (before any new message).
    fn registry_starter(
        &self,
        restore: bool,
    ) -> impl FnOnce(FrontEnd) -> Addr<ChannelRegistry> + 'static {
        let restore = restore.then(|| RestoreInbox {
            profiles: self
                .channels
                .iter()
                .map(|p| (p.id, Arc::clone(p)))
                .collect(),
            rerun_interrupted: self.settings.recovery.rerun_interrupted,
        });
        let runner = self.runner.clone();
        let store = self.store.clone();
        let run_slots = Arc::clone(&self.run_slots);
        let limits = self.settings.channels.clone();
        let metrics = self.metrics.clone().recipient();
        let warm = WarmPool::new(self.settings.claude.warm_cap().max);
        let usage = UsageGate::new(self.settings.channels.usage_backoff());
        let mut files = self.settings.files.clone();
        if self.settings.discord.is_proxied() {
            // Attachments are served by the configured server then.
            let base = &self.settings.discord.api_base_url;
            let host = base
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            files.download_hosts.push(host.to_string());
        }
        let git = actors::worktree::Git::new(self.runner.helper_env());
        let state_dir = self.state_dir();
        let shutdown = self.shutdown.clone();
        let spend_limits = Arc::clone(&self.limits);
        let scheduler = Scheduler::new(
            self.store.clone(),
            self.metrics.clone().recipient(),
            self.clock.clone(),
            self.settings.schedules.to_config(),
            &self.channels,
        );
        move |front| {
            let idle = limits.idle();
            let scheduler = scheduler.start();
            let replies = front.replies.clone();
            let deps = ChannelDeps {
                runner,
                store,
                run_slots,
                replies: front.replies,
                progress: front.progress,
                approvals: front.approvals,
                queue_limit: limits.queue_limit,
                command_prefix: limits.command_prefix,
                metrics,
                warm,
                usage,
                files,
                git,
                state_dir,
                shutdown,
                limits: spend_limits,
                schedules: Some(scheduler.clone().recipient()),
            };
            let registry = ChannelRegistry::new(deps, idle).start();
            let start_schedules = StartSchedules {
                submit: registry.clone().recipient(),
                replies,
            };
            let r = registry.clone();
            actix::spawn(async move {
                if let Some(restore) = restore {
                    // Handled before anything the front end routes: it is first in the
                    // mailbox, and the registry handles nothing else until it is done.
                    if let Ok(Err(e)) = r.send(restore).await {
                        warn!(error = %e, "could not read the inbox; its unanswered messages wait for the next start");
                    }
                }
                // Only now: a schedule's run written to the inbox before the restore read it
                // would be queued twice.
                scheduler.do_send(start_schedules);
            });
            registry
        }
    }

    fn state_dir(&self) -> std::path::PathBuf {
        crate::sandboxing::state_dir(&self.settings)
    }

    /// Connects to Discord and starts the gateway with its own registry.
    pub async fn start_discord(&self) -> Result<DiscordConnection, GatewayError> {
        // Read before any run can add to it: these are the replies a previous instance left.
        let undelivered = match self
            .store
            .send(ListUndelivered {
                conversation_id: None,
            })
            .await
        {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                warn!(error = %e, "could not read the outbox; undelivered replies wait for the next start");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        let start = self.registry_starter(true);
        let connection = GatewaySetup {
            discord: self.settings.discord.clone(),
            access: self.settings.access.clone(),
            channels: self
                .channels
                .iter()
                .zip(&self.settings.channel)
                .map(|(profile, channel)| DiscordChannel {
                    profile: Arc::clone(profile),
                    access: channel.access.clone(),
                })
                .collect(),
            start_registry: Box::new(move |gateway: Addr<DiscordGateway>| {
                start(FrontEnd::of(&gateway))
            }),
            store: self.store.clone(),
            recovery: self.settings.recovery.clone(),
            models: self.runner.models(),
            shutdown: self.shutdown.clone(),
        }
        .connect()
        .await?;
        if !undelivered.is_empty() {
            info!(
                replies = undelivered.len(),
                "sending again the replies a previous instance did not deliver"
            );
        }
        for row in undelivered {
            connection.gateway.do_send(row.into_reply());
        }
        self.prune_periodically();
        self.metrics
            .do_send(AttachGateway(Arc::clone(&connection.stats)));
        Ok(connection)
    }

    /// Forgets finished inbox rows and delivered replies older than `recovery.retention_days`,
    /// now and every six hours; and the inbox's and `sent/`'s files older than
    /// `files.retention_days`, now and every day.
    fn prune_periodically(&self) {
        let store = self.store.clone();
        let retention = self.settings.recovery.retention();
        let files = self.settings.files.clone();
        let configured: Vec<std::path::PathBuf> = self
            .channels
            .iter()
            .map(|c| c.project_dir.clone())
            .collect();
        actix::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(6 * 3600));
            for tick in 0_u64.. {
                every.tick().await;
                if tick % 4 == 0 {
                    prune_files(&store, &files, configured.clone()).await;
                }
                let before_ms = unix_ms().saturating_sub(retention.as_millis() as i64);
                match store.send(PruneDelivered { before_ms }).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(rows)) => info!(rows, "pruned the inbox and outbox"),
                    Ok(Err(e)) => warn!(error = %e, "could not prune the inbox and outbox"),
                    Err(_) => return,
                }
            }
        });
    }

    /// The stop (see [`Shutdown`]): once begun, no run starts — what is queued, and what
    /// arrives, stays in the inbox for the next start. Runs in flight get `shutdown.grace_secs`
    /// to finish and be saved; then they are cancelled (their users told) and their CLIs get
    /// `claude.kill_grace_secs` (and a little more) to end. Returns the number cancelled.
    pub async fn drain(&self, registry: &Addr<ChannelRegistry>) -> usize {
        let shutdown = &self.shutdown;
        shutdown.begin();
        let grace = self.settings.shutdown.grace();
        if tokio::time::timeout(grace, shutdown.settled())
            .await
            .is_ok()
        {
            return 0;
        }
        let cancelled = registry.send(CancelRuns).await.unwrap_or(0);
        let cancel_wait = self.settings.claude.kill_grace() + Duration::from_secs(10);
        if tokio::time::timeout(cancel_wait, shutdown.settled())
            .await
            .is_err()
        {
            warn!(
                under_way = shutdown.under_way(),
                "some work was still under way when the stop gave up waiting"
            );
        }
        cancelled
    }

    /// The service's stop, for a front end that stops by other means.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The last steps of any stop: write the WAL back into the database and log the final
    /// metrics.
    pub async fn close(&self) {
        match self.store.send(Checkpoint).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "could not checkpoint the session store"),
            Err(_) => warn!("session store already stopped"),
        }
        let _ = self.metrics.send(EmitMetrics).await;
    }

    /// Runs the Discord service until SIGTERM or SIGINT, then stops gracefully (see
    /// [`Application::drain`]); or until the connection fails for good.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let mut terminate =
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut interrupt =
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut connection = self
            .start_discord()
            .await
            .context("starting the Discord gateway")?;
        self.start_http(Some(connection.probe()), Some(connection.registry.clone()))
            .await
            .context("starting the HTTP server (http.listen)")?;
        let signal = tokio::select! {
            ended = &mut connection.client => {
                let why = match ended {
                    Ok(Ok(())) => "the Discord client stopped".to_string(),
                    Ok(Err(e)) => format!("the Discord connection ended: {e}"),
                    Err(e) => format!("the Discord client task failed: {e}"),
                };
                self.drain(&connection.registry).await;
                self.close().await;
                anyhow::bail!(why);
            }
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        info!(
            signal,
            grace_secs = self.settings.shutdown.grace_secs,
            "shutting down"
        );
        // Stop taking new messages, then let the runs in flight end.
        connection.shards.shutdown_all().await;
        let cancelled = self.drain(&connection.registry).await;
        let flushed = tokio::time::timeout(
            Duration::from_secs(30),
            connection.gateway.send(FlushOutbound),
        )
        .await;
        if flushed.is_err() {
            warn!("some Discord sends were still under way at exit");
        }
        self.close().await;
        info!(cancelled, "stopped");
        Ok(())
    }

    /// Starts the HTTP server if `http.listen` is set; answers where it listens. Prompts over
    /// HTTP are queued in `registry` (none: not served).
    pub async fn start_http(
        &self,
        gateway: Option<actors::discord::GatewayProbe>,
        registry: Option<Addr<ChannelRegistry>>,
    ) -> std::io::Result<Option<std::net::SocketAddr>> {
        let Some(addr) = self.settings.http.listen else {
            return Ok(None);
        };
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let state = crate::http::HttpState {
            metrics: self.metrics.clone(),
            store: self.store.clone(),
            gateway,
            shutdown: self.shutdown.clone(),
            prompts: registry.map(|registry| {
                crate::http::prompts::Prompts::new(
                    registry,
                    self.store.clone(),
                    self.metrics.clone().recipient(),
                    self.channels
                        .iter()
                        .map(|p| (p.name.clone(), ConversationRef::channel(Arc::clone(p))))
                        .collect(),
                    self.settings.http.tokens.clone(),
                    self.settings.http.prompts_per_minute,
                )
            }),
            max_body_bytes: usize::try_from(self.settings.http.max_body_bytes)
                .unwrap_or(usize::MAX),
        };
        actix_rt::spawn(crate::http::serve(listener, state));
        Ok(Some(bound))
    }

    /// The conversation of the configured channel called `name`.
    pub fn conversation(&self, name: &str) -> Option<ConversationRef> {
        self.channels
            .iter()
            .find(|c| c.name == name)
            .map(|p| ConversationRef::channel(Arc::clone(p)))
    }

    /// The configured channels, with absolute project directories.
    pub fn channels(&self) -> &[Arc<ChannelProfile>] {
        &self.channels
    }

    /// Kills the process groups of CLI processes a previous instance left running (killed
    /// itself, it could not end them): those recorded whose pid still names the same process.
    /// Only for a process that holds the database lock (`run`, `console`): another instance's
    /// processes are not leftovers while it runs.
    pub async fn kill_left_processes(&self) {
        kill_left_processes(&self.store).await;
    }

    /// The session store.
    pub fn store(&self) -> &Addr<SessionStoreActor> {
        &self.store
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}

/// Records the CLI processes the runner starts and reaps in the store.
struct StoreProcessLog {
    store: Addr<SessionStoreActor>,
}

impl ProcessLog for StoreProcessLog {
    fn started(&self, pid: i32, start_time: u64) {
        self.store.do_send(RecordProcess { pid, start_time });
    }

    fn ended(&self, pid: i32) {
        self.store.do_send(ForgetProcess { pid });
    }
}

/// See [`Application::kill_left_processes`].
/// Applies `files.retention_days` to every project directory the service has worked in: the
/// configured ones and those its conversations recorded (threads' worktrees).
async fn prune_files(
    store: &Addr<SessionStoreActor>,
    files: &actors::files::FilesConfig,
    mut projects: Vec<std::path::PathBuf>,
) {
    let Some(retention) = files.retention() else {
        return;
    };
    if let Ok(Ok(all)) = store.send(actors::store::ListConversations).await {
        projects.extend(
            all.into_iter()
                .map(|c| std::path::PathBuf::from(c.project_dir)),
        );
    }
    projects.sort();
    projects.dedup();
    let before = std::time::SystemTime::now()
        .checked_sub(retention)
        .unwrap_or(std::time::UNIX_EPOCH);
    let files = files.clone();
    let prune = move || actors::files::prune_all(&projects, &files, before);
    if let Ok(pruned) = actix_rt::task::spawn_blocking(prune).await {
        if pruned.directories + pruned.files > 0 {
            info!(
                directories = pruned.directories,
                files = pruned.files,
                "pruned the coordinator's inbox and sent files"
            );
        }
    }
}

async fn kill_left_processes(store: &Addr<SessionStoreActor>) {
    let left = match store.send(TakeLeftProcesses).await {
        Ok(Ok(left)) => left,
        Ok(Err(e)) => {
            warn!(error = %e, "could not read the CLI processes a previous instance left");
            return;
        }
        Err(_) => return,
    };
    for (pid, start_time) in left {
        // A pid reused by another process has another start time: not ours to kill.
        if process_start_time(pid) == Some(start_time) {
            let group = nix::unistd::Pid::from_raw(pid);
            match nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL) {
                Ok(()) => warn!(
                    pid,
                    "killed the claude process group a previous instance left running"
                ),
                Err(e) => {
                    warn!(pid, error = %e, "could not kill a claude process group a previous instance left");
                }
            }
        }
    }
}
