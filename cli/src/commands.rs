//! The command line: arguments and what each command does.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use durable_status::format::time::{api_time, parse_user_time};
use durable_status::http::{HttpApi, KEYS_VARIABLE};
use durable_status::{
    CustomStatus, InstanceQuery, InstanceStatus, InstanceStore, JsonText, NewInstance, PurgeFilter,
    ReadOptions, RuntimeStatus, Secret, StateChange, StatusPayload, StorageConfig, StoreOptions,
    TransportKind,
};
use futures::TryStreamExt;
use time::OffsetDateTime;

/// Keep and serve the status of Durable Functions orchestrations in Azure
/// Table Storage.
#[derive(Parser)]
#[command(
    name = "durable-status",
    version,
    about,
    max_term_width = 100,
    after_help = "Storage is reached with a connection string, or with Microsoft Entra ID: a \
                  managed identity, or the developer's sign-in (AZURE_* variables, then az \
                  login). The identity needs the data role Storage Table Data Contributor on \
                  the account (Storage Table Data Reader to read only). The environment may \
                  hold the settings of a Functions app instead of the options: \
                  AzureWebJobsStorage (a connection string), or AzureWebJobsStorage__accountName, \
                  __tableServiceUri, __blobServiceUri, __credential=managedidentity and \
                  __clientId. To trust the certificate of a proxy or an emulator signed by a CA \
                  of your own, name a PEM file of it in SSL_CERT_FILE."
)]
pub struct Cli {
    /// Storage connection string [default: $AzureWebJobsStorage, then the
    /// AzureWebJobsStorage__* settings of an identity-based connection, then
    /// $AZURE_STORAGE_CONNECTION_STRING, then the local emulator; the demo
    /// uses its own emulator unless this is given]
    #[arg(long, global = true, value_name = "TEXT")]
    connection_string: Option<String>,

    /// The task hub
    #[arg(long, global = true, default_value = "TestHubName")]
    task_hub: String,

    #[command(flatten)]
    sign_in: crate::sign_in::SignIn,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an instance (Pending)
    Create {
        /// Instance id
        id: String,
        /// Orchestrator name
        #[arg(long)]
        name: String,
        /// Input, as JSON
        #[arg(long, value_name = "JSON")]
        input: Option<String>,
    },
    /// Print an instance's status as the HTTP API shows it; with several
    /// ids, a JSON array of them in the order given (null for an absent one)
    Get {
        /// Instance ids (one or more)
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// Leave the input out
        #[arg(long)]
        no_input: bool,
    },
    /// Set the custom status (JSON; `null` clears it)
    SetCustomStatus {
        /// Instance id
        id: String,
        /// The custom status, as JSON
        json: String,
    },
    /// Mark an instance Completed
    Complete {
        /// Instance id
        id: String,
        /// Output, as JSON
        #[arg(long, value_name = "JSON")]
        output: Option<String>,
    },
    /// Mark an instance Failed
    Fail {
        /// Instance id
        id: String,
        /// What went wrong
        #[arg(long, value_name = "TEXT", default_value = "")]
        error: String,
    },
    /// Terminate an instance
    Terminate {
        /// Instance id
        id: String,
        /// Why
        #[arg(long, value_name = "TEXT", default_value = "")]
        reason: String,
    },
    /// Suspend an instance
    Suspend {
        /// Instance id
        id: String,
    },
    /// Resume a suspended instance
    Resume {
        /// Instance id
        id: String,
    },
    /// List instances
    List {
        #[command(flatten)]
        filters: Filters,
        /// Instances per page (1-1000)
        #[arg(long, default_value_t = 100)]
        top: u32,
        /// List every instance: key ranges read in parallel, in no
        /// particular order (with --ordered, one page after another in key
        /// order)
        #[arg(long)]
        all: bool,
        /// With --all: in key order, one page after another (slower on a
        /// big task hub)
        #[arg(long, requires = "all")]
        ordered: bool,
        /// JSON lines instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Count instances per runtime status
    Counts {
        #[command(flatten)]
        filters: Filters,
    },
    /// Delete one instance, or every terminal instance created in a range
    Purge {
        /// Instance id (or give --created-from)
        #[arg(conflicts_with_all = ["created_from", "created_to", "status", "name", "keep_history"])]
        id: Option<String>,
        /// Purge instances created at or after this time
        #[arg(long, value_name = "TIME", required_unless_present = "id")]
        created_from: Option<String>,
        /// ... and at or before this time [default: now]
        #[arg(long, value_name = "TIME")]
        created_to: Option<String>,
        /// Only these statuses [default: Completed,Failed,Canceled,Terminated]
        #[arg(long, value_name = "S,...")]
        status: Option<String>,
        /// Only instances of these orchestrators (exact names, comma separated or repeated)
        #[arg(long, value_name = "NAME,...")]
        name: Vec<String>,
        /// Allow purging instances that are not terminal
        #[arg(long)]
        allow_non_terminal: bool,
        /// Leave the instances' rows in the task hub's History table
        #[arg(long)]
        keep_history: bool,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
    /// Serve the HTTP status API and the status page
    Serve {
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:7071")]
        addr: SocketAddr,
        /// A key that requests must present (repeatable) [also: $DURABLE_STATUS_KEYS, comma separated]
        #[arg(long, value_name = "KEY")]
        key: Vec<String>,
        #[command(flatten)]
        serving: Serving,
    },
    /// Run sample orchestrations and serve them: starts the bundled emulator
    /// unless --connection-string is given
    Demo {
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:7071")]
        addr: SocketAddr,
        /// A key that requests must present (repeatable)
        #[arg(long, value_name = "KEY")]
        key: Vec<String>,
        #[command(flatten)]
        serving: Serving,
    },
}

/// How the HTTP API is served.
#[derive(Args)]
pub struct Serving {
    #[arg(
        long,
        value_name = "URL",
        help = "The URL clients reach this server at (e.g. https://status.example.com): \
                Location headers are absolute on it [default: relative Location headers]"
    )]
    public_url: Option<String>,
    /// Connections served at once; past them, 503 and close
    #[arg(long, value_name = "N", default_value_t = durable_status::http::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
}

impl Serving {
    /// The API of `store` with these settings.
    pub fn api(&self, store: InstanceStore, keys: Vec<Secret>) -> Result<HttpApi> {
        let api = HttpApi::new(store, keys).max_connections(self.max_connections);
        Ok(match &self.public_url {
            Some(url) => api.public_url(url).context("--public-url")?,
            None => api,
        })
    }

    /// The URL of the page (`path` "/") or of an API path, as a client
    /// reaches it: on the public URL, else on the bound address.
    pub fn url(&self, bound: SocketAddr, path: &str) -> String {
        match &self.public_url {
            Some(url) => format!("{}{path}", url.trim().trim_end_matches('/')),
            None => format!("http://{bound}{path}"),
        }
    }
}

#[derive(Args)]
struct Filters {
    /// Only these runtime statuses
    #[arg(long, value_name = "S,...")]
    status: Option<String>,
    /// Only instances created at or after this time
    #[arg(long, value_name = "TIME")]
    created_from: Option<String>,
    /// Only instances created at or before this time
    #[arg(long, value_name = "TIME")]
    created_to: Option<String>,
    /// Only instance ids that start with this
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<String>,
    /// Only instances of these orchestrators (exact names, comma separated or repeated)
    #[arg(long, value_name = "NAME,...")]
    name: Vec<String>,
}

impl Filters {
    fn query(&self) -> Result<InstanceQuery> {
        let mut query = InstanceQuery::new().statuses(parse_statuses(self.status.as_deref())?);
        if let Some(from) = &self.created_from {
            query = query.created_from(parse_time("--created-from", from)?);
        }
        if let Some(to) = &self.created_to {
            query = query.created_to(parse_time("--created-to", to)?);
        }
        if let Some(prefix) = &self.prefix {
            query = query.instance_id_prefix(prefix.clone());
        }
        let names: Vec<&str> = self
            .name
            .iter()
            .flat_map(|n| n.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() && !self.name.is_empty() {
            bail!("--name: give at least one orchestrator name");
        }
        Ok(query.names(names))
    }
}

/// A name filter the library refused, said as the option that gave it.
fn name_option(error: anyhow::Error) -> anyhow::Error {
    match error.downcast_ref::<durable_status::Error>() {
        Some(durable_status::Error::Invalid {
            field: "orchestrator name",
            ..
        }) => error.context("--name"),
        _ => error,
    }
}

fn parse_statuses(text: Option<&str>) -> Result<Vec<RuntimeStatus>> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<RuntimeStatus>()
                .map_err(|e| anyhow!("--status: {e}"))
        })
        .collect()
}

fn parse_time(option: &str, text: &str) -> Result<OffsetDateTime> {
    parse_user_time(text).ok_or_else(|| {
        anyhow!(
            "{option}: '{text}' is not a date and time (use ISO 8601, e.g. 2024-01-31T18:30:00Z)"
        )
    })
}

/// The configuration: the option, the environment, or the local emulator.
pub fn storage_config(connection_string: Option<&str>) -> Result<Option<StorageConfig>> {
    match connection_string {
        Some(text) => Ok(Some(
            StorageConfig::from_connection_string(text).context("--connection-string")?,
        )),
        None => Ok(StorageConfig::from_env()?),
    }
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    if cli.sign_in.given() {
        if cli.connection_string.is_some() {
            bail!("--connection-string and the sign-in options (--account-name, --credential, ...) are exclusive");
        }
        if matches!(cli.command, Command::Demo { .. }) {
            bail!("demo runs on its own emulator, or on --connection-string: the sign-in options do not apply");
        }
    }
    if let Command::Demo { addr, key, serving } = cli.command {
        // Only an explicit connection string takes the demo off the
        // emulator: one exported for a Functions app must not receive
        // sample orchestrations.
        let config = cli
            .connection_string
            .as_deref()
            .map(StorageConfig::from_connection_string)
            .transpose()?;
        return crate::demo::run(config, &cli.task_hub, addr, keys(key), &serving).await;
    }
    let configured = if cli.sign_in.given() {
        Some(cli.sign_in.config()?)
    } else {
        storage_config(cli.connection_string.as_deref())?
    };
    let defaulted = configured.is_none();
    let config = configured.unwrap_or_else(StorageConfig::development_storage);
    let endpoint = config.table_endpoint.clone();
    execute(cli, config).await.map_err(|error| {
        match error.downcast_ref::<durable_status::Error>() {
            Some(durable_status::Error::Transport {
                kind: TransportKind::Connect,
                ..
            }) if defaulted => error.context(format!(
                "no connection string is configured, and no storage emulator answers at {endpoint}: \
                 start one (azurite/start-table.sh, or docker compose up), or set \
                 AzureWebJobsStorage or --connection-string"
            )),
            _ => error,
        }
    })
}

async fn execute(cli: Cli, config: StorageConfig) -> Result<ExitCode> {
    // Only the commands that write a new row (or serve) create the table: a
    // mistyped --task-hub must not leave an empty table behind.
    let store = match cli.command {
        Command::Create { .. } | Command::Serve { .. } => {
            InstanceStore::connect(&config, &cli.task_hub).await?
        }
        _ => InstanceStore::open(&config, &cli.task_hub, StoreOptions::default())?,
    };
    let out = &mut std::io::stdout().lock();
    match cli.command {
        Command::Create { id, name, input } => {
            let mut new = NewInstance::new(id.clone(), name);
            if let Some(input) = input {
                new = new.input(JsonText::parse("input", input)?);
            }
            store.create(new).await?;
            writeln!(out, "created instance '{id}' (Pending)")?;
        }
        Command::Get { ids, no_input } => {
            let read = ReadOptions::default().include_input(!no_input);
            if let [id] = ids.as_slice() {
                let Some(status) = store.get_with(id, read).await? else {
                    eprintln!("error: instance '{id}' was not found");
                    return Ok(ExitCode::FAILURE);
                };
                serde_json::to_writer_pretty(&mut *out, &StatusPayload::new(&status, !no_input))?;
            } else {
                // Several: an array in the order given, null for an absent one.
                let found = store.get_many(&ids, read).await?;
                let payloads: Vec<Option<StatusPayload>> = found
                    .iter()
                    .map(|s| s.as_ref().map(|s| StatusPayload::new(s, !no_input)))
                    .collect();
                serde_json::to_writer_pretty(&mut *out, &payloads)?;
            }
            writeln!(out)?;
        }
        Command::SetCustomStatus { id, json } => {
            let status = CustomStatus::from_json(json)?;
            let status = (status.as_str().trim() != "null").then_some(status);
            store.set_custom_status(&id, status.as_ref()).await?;
            writeln!(out, "custom status of '{id}' set")?;
        }
        Command::Complete { id, output } => {
            let output = output.map(|o| JsonText::parse("output", o)).transpose()?;
            change(&store, &id, StateChange::Complete { output }, out).await?;
        }
        Command::Fail { id, error } => {
            change(&store, &id, StateChange::Fail { error }, out).await?
        }
        Command::Terminate { id, reason } => {
            change(&store, &id, StateChange::Terminate { reason }, out).await?
        }
        Command::Suspend { id } => change(&store, &id, StateChange::Suspend, out).await?,
        Command::Resume { id } => change(&store, &id, StateChange::Resume, out).await?,
        Command::List {
            filters,
            top,
            all,
            ordered,
            json,
        } => {
            let query = filters.query()?.page_size(top).include_input(false);
            let listing = match (all, ordered) {
                (false, _) => Listing::OnePage,
                (true, true) => Listing::AllInKeyOrder,
                (true, false) => Listing::AllInParallel,
            };
            list(&store, &query, top as usize, listing, json, out)
                .await
                .map_err(name_option)?;
        }
        Command::Counts { filters } => {
            let counts = store
                .count_by_status(&filters.query()?.include_input(false).include_output(false))
                .await
                .map_err(|e| name_option(e.into()))?;
            for (status, count) in counts.iter() {
                writeln!(out, "{:<16}{count:>10}", status.name())?;
            }
            writeln!(out, "{:<16}{:>10}", "Total", counts.total())?;
        }
        Command::Purge {
            id: Some(id),
            allow_non_terminal,
            ..
        } => {
            let deleted = if allow_non_terminal {
                store.purge_instance(&id).await?
            } else {
                store
                    .purge_terminal_instance(&id)
                    .await
                    .map_err(|e| match e {
                        durable_status::Error::NotTerminal { .. } => {
                            anyhow!("{e} (pass --allow-non-terminal to purge it anyway)")
                        }
                        other => other.into(),
                    })?
            };
            if deleted {
                writeln!(out, "purged instance '{id}'")?;
            } else {
                writeln!(out, "instance '{id}' was not found: nothing to purge")?;
            }
        }
        Command::Purge {
            id: None,
            created_from,
            created_to,
            status,
            name,
            allow_non_terminal,
            keep_history,
            yes,
        } => {
            let from = parse_time(
                "--created-from",
                created_from.as_deref().unwrap_or_default(),
            )?;
            let to = match created_to {
                Some(to) => parse_time("--created-to", &to)?,
                None => OffsetDateTime::now_utc(),
            };
            let mut filter = PurgeFilter::created_from(from)
                .created_to(to)
                .allow_non_terminal(allow_non_terminal)
                .include_history(!keep_history);
            for name in name.iter().flat_map(|n| n.split(',')).map(str::trim) {
                if !name.is_empty() {
                    filter = filter.name(name);
                }
            }
            if status.is_some() {
                filter = filter.statuses(parse_statuses(status.as_deref())?);
            }
            return purge(&store, filter, (from, to), yes, out).await;
        }
        Command::Serve { addr, key, serving } => {
            return serve(store, addr, keys(key), &serving).await;
        }
        Command::Demo { .. } => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Keys from the option and from the environment.
fn keys(from_args: Vec<String>) -> Vec<Secret> {
    let from_env = std::env::var(KEYS_VARIABLE).unwrap_or_default();
    from_args
        .into_iter()
        .chain(from_env.split(',').map(str::to_owned))
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
        .map(Secret::new)
        .collect()
}

async fn change(
    store: &InstanceStore,
    id: &str,
    change: StateChange,
    out: &mut impl Write,
) -> Result<()> {
    store.change_state(id, &change).await?;
    writeln!(out, "instance '{id}' is now {}", change.target_status())?;
    Ok(())
}

/// What `list` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    OnePage,
    AllInKeyOrder,
    AllInParallel,
}

async fn list(
    store: &InstanceStore,
    query: &InstanceQuery,
    page_size: usize,
    listing: Listing,
    json: bool,
    out: &mut impl Write,
) -> Result<()> {
    let mut printed = 0usize;
    let mut print =
        |instances: &[InstanceStatus], out: &mut dyn Write, header: bool| -> Result<()> {
            if json {
                for status in instances {
                    serde_json::to_writer(&mut *out, &StatusPayload::new(status, false))?;
                    writeln!(out)?;
                }
            } else {
                if header {
                    writeln!(
                        out,
                        "{:<36}  {:<24}  {:<14}  {:<20}  {:<20}  CUSTOM STATUS",
                        "INSTANCE ID", "NAME", "STATUS", "CREATED", "LAST UPDATED"
                    )?;
                }
                for status in instances {
                    let custom = status
                        .custom_status
                        .as_ref()
                        .map(|c| c.as_str())
                        .unwrap_or("");
                    writeln!(
                        out,
                        "{:<36}  {:<24}  {:<14}  {:<20}  {:<20}  {}",
                        status.instance_id,
                        status.name,
                        status.runtime_status.name(),
                        api_time(status.created_time),
                        api_time(status.last_updated_time),
                        shorten(custom, 60)
                    )?;
                }
            }
            printed += instances.len();
            Ok(())
        };
    if listing != Listing::OnePage {
        // A page size of 0 is refused by the query, as the stream's first item.
        let instances = if listing == Listing::AllInKeyOrder {
            store.query(query)
        } else {
            store.query_unordered(query)
        };
        let mut stream = instances.try_chunks(page_size.max(1));
        let mut header = true;
        while let Some(chunk) = stream.try_next().await.map_err(|e| e.1)? {
            print(&chunk, out, header)?;
            header = false;
        }
        if header {
            print(&[], out, true)?;
        }
    } else {
        let page = store.query_page(query, None).await?;
        print(&page.instances, out, true)?;
        if page.continuation_token.is_some() {
            eprintln!("(more instances follow: pass --all to list them all)");
        }
    }
    tracing::debug!(printed, "listed");
    Ok(())
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max - 1).collect();
    short.push('…');
    short
}

async fn purge(
    store: &InstanceStore,
    filter: PurgeFilter,
    (from, to): (OffsetDateTime, OffsetDateTime),
    yes: bool,
    out: &mut impl Write,
) -> Result<ExitCode> {
    // The count is of the very query the purge runs.
    let counts = store.count_by_status(&filter.query()?).await?;
    if counts.total() == 0 {
        writeln!(out, "nothing to purge: no instance matches")?;
        return Ok(ExitCode::SUCCESS);
    }
    let by_status: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    writeln!(
        out,
        "{} instances created from {} to {} match: {}",
        counts.total(),
        api_time(from),
        api_time(to),
        by_status.join(", ")
    )?;
    out.flush()?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!("refusing to purge without confirmation: pass --yes");
        }
        eprint!("Delete them? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            writeln!(out, "nothing deleted")?;
            return Ok(ExitCode::FAILURE);
        }
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(counts.total());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} deleted ({per_sec}, {eta} left)",
            )
            .expect("a valid template"),
        );
        bar
    });
    let result = store
        .purge_with_progress(&filter, |p| {
            if let Some(bar) = &bar {
                bar.set_position(p.deleted + p.skipped);
            }
        })
        .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let done = result?;
    // (An interrupted purge is an error above: its message says how far it came.)
    writeln!(
        out,
        "deleted {} instances ({} skipped: changed or gone since they were read) and {} History rows",
        done.deleted, done.skipped, done.history_rows_deleted
    )?;
    Ok(ExitCode::SUCCESS)
}

pub async fn serve(
    store: InstanceStore,
    addr: SocketAddr,
    keys: Vec<Secret>,
    serving: &Serving,
) -> Result<ExitCode> {
    durable_status::http::check_listen_address(&addr, !keys.is_empty())?;
    let task_hub = store.task_hub().to_owned();
    // Checked before listening: a bad --public-url is a one-line error.
    let api = serving.api(store, keys)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    println!(
        "Serving task hub {task_hub} on http://{bound} (status page at {})",
        serving.url(bound, "/")
    );
    serve_until_interrupted(listener, api).await
}

/// The exit code of a server stopped by a second Ctrl-C (that of a process
/// ended by SIGINT).
const INTERRUPTED_AGAIN: u8 = 130;

/// Serves until Ctrl-C, then lets the requests in flight finish (within the
/// API's shutdown grace); a second Ctrl-C stops at once, dropping them. The
/// exit code: success, or [`INTERRUPTED_AGAIN`].
pub async fn serve_until_interrupted(
    listener: tokio::net::TcpListener,
    api: HttpApi,
) -> Result<ExitCode> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = durable_status::http::serve(listener, api, async {
        let _ = stopped.await;
    });
    let interrupted_twice = async {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(());
        // Said only when there is something to wait for.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let _ = writeln!(
            std::io::stderr(),
            "Stopping: waiting for the requests in flight (Ctrl-C again to stop at once)"
        );
        let _ = tokio::signal::ctrl_c().await;
    };
    tokio::select! {
        served = serving => {
            served?;
            Ok(ExitCode::SUCCESS)
        }
        () = interrupted_twice => {
            // (Dropping the server dropped its connections.)
            let _ = writeln!(
                std::io::stderr(),
                "Stopped at once: the requests in flight were dropped"
            );
            Ok(ExitCode::from(INTERRUPTED_AGAIN))
        }
    }
}
