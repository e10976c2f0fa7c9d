//! `tmctl`: traffic-manager from the command line.
//!
//! Exit codes: 0 done; 1 refused by the server (a 4xx other than 404: invalid, not
//! allowed, conflict…); 2 bad usage or configuration; 3 not found (404); 4 the server
//! is out of reach or failed (5xx).

mod profile;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use comfy_table::Table;
use serde::Serialize;
use traffic_manager_client::{
    Client, Error, NewRoute, Pick, Route, RouteKey, RouteQuery, ServiceKey,
};

#[derive(Parser)]
#[command(
    name = "tmctl",
    version,
    about = "traffic-manager from the command line"
)]
struct Cli {
    /// The profile of the configuration file to use (default: its `default_profile`).
    #[arg(long, global = true, env = "TMCTL_PROFILE")]
    profile: Option<String>,
    /// The server's base URL (over the profile and TMCTL_URL).
    #[arg(long, global = true)]
    server: Option<String>,
    /// How answers are printed.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Columns for people.
    Table,
    /// The API's JSON, for scripts.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Routes: list, read, create, activate, deactivate, weigh, delete.
    #[command(subcommand)]
    Routes(RoutesCommand),
    /// The URL resolve gives now.
    Resolve {
        #[command(flatten)]
        service: ServiceArgs,
        /// This version, if active.
        #[arg(long)]
        version: Option<String>,
        /// By weight, the same version for the same key.
        #[arg(long)]
        key: Option<String>,
        /// How resolve chooses, instead of the answer (always JSON).
        #[arg(long)]
        explain: bool,
    },
    /// Prints the service's routing state, then again at each change, until stopped
    /// (`--once`: the state now, and exit).
    Watch {
        #[command(flatten)]
        service: ServiceArgs,
        #[arg(long)]
        once: bool,
    },
    /// The service's audit log, oldest first.
    Audit {
        #[command(flatten)]
        service: ServiceArgs,
        /// Entries after this one.
        #[arg(long)]
        after: Option<i64>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// API keys: list, create (the secret is printed once), revoke.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The dead-letter queue.
    Dlq {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Prints the shell completion script for `shell`.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum KeysCommand {
    List,
    Create {
        #[arg(long)]
        name: String,
        /// `admin`, `tenant_admin` or `reader`.
        #[arg(long)]
        role: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    Revoke {
        id: String,
    },
}

#[derive(Args)]
struct ServiceArgs {
    #[arg(long)]
    tenant: String,
    #[arg(long)]
    service: String,
    #[arg(long)]
    env: String,
}

#[derive(Args)]
struct RouteArgs {
    #[command(flatten)]
    service: ServiceArgs,
    #[arg(long)]
    version: String,
}

#[derive(Subcommand)]
enum RoutesCommand {
    /// Routes, a page at a time (`--cursor` goes on from where a page ended).
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        env: Option<String>,
        #[arg(long)]
        active: Option<bool>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One route, by id.
    Get {
        id: String,
    },
    /// Creates a route (inactive unless `--active`).
    Create {
        #[command(flatten)]
        route: RouteArgs,
        #[arg(long)]
        url: String,
        /// 0–100 (the server's default: 100).
        #[arg(long)]
        weight: Option<u8>,
        #[arg(long)]
        active: bool,
    },
    Activate {
        #[command(flatten)]
        route: RouteArgs,
    },
    Deactivate {
        #[command(flatten)]
        route: RouteArgs,
    },
    /// Sets a route's weight (0–100), if nobody changed it since it was read.
    SetWeight {
        id: String,
        weight: u8,
    },
    Delete {
        id: String,
    },
    /// Puts the service's previous activation state back.
    Rollback {
        #[command(flatten)]
        service: ServiceArgs,
    },
}

impl ServiceArgs {
    fn key(&self) -> ServiceKey {
        ServiceKey::new(&self.tenant, &self.service, &self.env)
    }
}

impl RouteArgs {
    fn key(&self) -> RouteKey {
        RouteKey {
            tenant: self.service.tenant.clone(),
            service: self.service.service.clone(),
            env: self.service.env.clone(),
            version: self.version.clone(),
        }
    }
}

/// What a command prints.
enum Printed {
    Routes(Vec<Route>, Option<String>),
    Route(Route),
    Value(serde_json::Value, Vec<(&'static str, String)>),
    /// JSON however the output is asked for.
    Json(serde_json::Value),
    /// The JSON, or a table of rows under the headers, and a line saying how to read on.
    Table(
        serde_json::Value,
        &'static [&'static str],
        Vec<Vec<String>>,
        Option<String>,
    ),
    Nothing,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "tmctl", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let flags = profile::Profile {
        url: cli.server.clone(),
        key: None,
    };
    let settings = match profile::resolve(cli.profile.as_deref(), &flags) {
        Ok(settings) => settings,
        Err(message) => return fail(2, &message),
    };
    let (Some(url), Some(key)) = (settings.url, settings.key) else {
        return fail(
            2,
            "no server or key: set url and key in a profile of the configuration file, or TMCTL_URL and TMCTL_KEY",
        );
    };
    let client = match Client::new(&url, &key) {
        Ok(client) => client,
        Err(error) => return fail(2, &error.to_string()),
    };
    match run(&client, cli.command, cli.output).await {
        Ok(printed) => {
            print(cli.output, printed);
            ExitCode::SUCCESS
        }
        Err(error) => {
            let code = match &error {
                Error::Api { status: 404, .. } => 3,
                Error::Api { status, .. } if *status < 500 => 1,
                Error::Url(_) => 2,
                _ => 4,
            };
            fail(code, &error.to_string())
        }
    }
}

async fn run(client: &Client, command: Command, output: Output) -> Result<Printed, Error> {
    Ok(match command {
        Command::Completions { .. } => Printed::Nothing,
        Command::Resolve {
            service,
            version,
            key,
            explain: true,
        } => {
            let pick = match (version, key) {
                (Some(version), _) => Pick::Version(version),
                (None, Some(key)) => Pick::Key(key),
                (None, None) => Pick::Any,
            };
            Printed::Json(client.explain(&service.key(), &pick).await?)
        }
        Command::Resolve {
            service,
            version,
            key,
            explain: false,
        } => {
            let resolved = client
                .resolve(&service.key(), version.as_deref(), key.as_deref())
                .await?;
            let rows = vec![
                ("version", resolved.version.clone()),
                ("url", resolved.url.clone()),
            ];
            Printed::Value(json(&resolved), rows)
        }
        Command::Watch { service, once } => {
            let key = service.key();
            let mut since = None;
            loop {
                let state = client.watch(&key, since, Duration::from_secs(60)).await?;
                if state.changed {
                    print(output, Printed::Json(json(&state)));
                }
                if once {
                    return Ok(Printed::Nothing);
                }
                since = Some(state.generation);
            }
        }
        Command::Audit {
            service,
            after,
            limit,
        } => audit(client, &service.key(), after, limit).await?,
        Command::Keys(command) => keys(client, command).await?,
        Command::Dlq {
            tenant,
            limit,
            cursor,
        } => dlq(client, tenant.as_deref(), limit, cursor.as_deref()).await?,
        Command::Routes(command) => routes(client, command).await?,
    })
}

async fn audit(
    client: &Client,
    service: &ServiceKey,
    after: Option<i64>,
    limit: Option<u32>,
) -> Result<Printed, Error> {
    let page = client.audit(service, after, limit).await?;
    let rows = page
        .items
        .iter()
        .map(|e| {
            let changes: Vec<String> = e
                .changes
                .iter()
                .map(|(field, c)| format!("{field}: {} → {}", c.from, c.to))
                .collect();
            vec![
                e.id.to_string(),
                e.at.to_rfc3339(),
                e.action.clone(),
                e.version.clone().unwrap_or_default(),
                e.actor.clone(),
                changes.join(", "),
            ]
        })
        .collect();
    let more = page.next_after.map(|a| format!("more: --after {a}"));
    let headers = &["ID", "AT", "ACTION", "VERSION", "ACTOR", "CHANGES"];
    Ok(Printed::Table(json(&page), headers, rows, more))
}

async fn keys(client: &Client, command: KeysCommand) -> Result<Printed, Error> {
    Ok(match command {
        KeysCommand::List => {
            let keys = client.list_keys().await?;
            let rows = keys
                .iter()
                .map(|k| {
                    vec![
                        k.id.clone(),
                        k.name.clone(),
                        k.role.clone(),
                        k.tenant.clone().unwrap_or_default(),
                        k.created_at.to_rfc3339(),
                    ]
                })
                .collect();
            let value = serde_json::json!({ "items": keys });
            let headers = &["ID", "NAME", "ROLE", "TENANT", "CREATED"];
            Printed::Table(value, headers, rows, None)
        }
        KeysCommand::Create { name, role, tenant } => {
            let created = client.create_key(&name, &role, tenant.as_deref()).await?;
            let rows = vec![
                ("id", created.id.clone()),
                ("role", created.role.clone()),
                ("key", created.key.clone()),
                ("note", "the key is shown only now".to_owned()),
            ];
            Printed::Value(json(&created), rows)
        }
        KeysCommand::Revoke { id } => {
            client.revoke_key(&id).await?;
            Printed::Nothing
        }
    })
}

async fn dlq(
    client: &Client,
    tenant: Option<&str>,
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<Printed, Error> {
    let page = client.dead_jobs(tenant, limit, cursor).await?;
    let rows = page
        .items
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                j.kind.clone(),
                j.tenant.clone().unwrap_or_default(),
                j.attempts.to_string(),
                j.failed_at.to_rfc3339(),
                j.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let more = page
        .next_cursor
        .as_ref()
        .map(|c| format!("more: --cursor {c}"));
    let headers = &["ID", "KIND", "TENANT", "ATTEMPTS", "FAILED", "ERROR"];
    Ok(Printed::Table(json(&page), headers, rows, more))
}

async fn routes(client: &Client, command: RoutesCommand) -> Result<Printed, Error> {
    Ok(match command {
        RoutesCommand::List {
            tenant,
            service,
            env,
            active,
            limit,
            cursor,
        } => {
            let query = RouteQuery {
                tenant,
                service,
                env,
                active,
                limit,
                cursor,
            };
            let page = client.list_routes(&query).await?;
            Printed::Routes(page.items, page.next_cursor)
        }
        RoutesCommand::Get { id } => Printed::Route(client.get_route(&id).await?),
        RoutesCommand::Create {
            route,
            url,
            weight,
            active,
        } => {
            let key = route.key();
            let new = NewRoute {
                tenant: key.tenant,
                service: key.service,
                env: key.env,
                version: key.version,
                url,
                active,
                weight,
            };
            Printed::Route(client.create_route(&new).await?)
        }
        RoutesCommand::Activate { route } => Printed::Route(client.activate(&route.key()).await?),
        RoutesCommand::Deactivate { route } => {
            Printed::Route(client.deactivate(&route.key()).await?)
        }
        RoutesCommand::SetWeight { id, weight } => {
            let current = client.get_route(&id).await?;
            Printed::Route(client.set_weight(&id, weight, current.revision).await?)
        }
        RoutesCommand::Delete { id } => {
            client.delete_route(&id).await?;
            Printed::Nothing
        }
        RoutesCommand::Rollback { service } => {
            let rolled = client.rollback(&service.key()).await?;
            let rows = vec![
                ("active_versions", rolled.active_versions.join(",")),
                ("restored_entry", rolled.restored_entry.to_string()),
                ("generation", rolled.generation.to_string()),
            ];
            Printed::Value(json(&rolled), rows)
        }
    })
}

fn json(value: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(value).expect("answers serialize")
}

fn print(output: Output, printed: Printed) {
    let mut out = std::io::stdout().lock();
    let text = match (output, printed) {
        (_, Printed::Nothing) => return,
        (Output::Json, Printed::Routes(items, next)) => {
            pretty(&serde_json::json!({ "items": items, "next_cursor": next }))
        }
        (Output::Json, Printed::Route(route)) => pretty(&json(&route)),
        (Output::Json, Printed::Value(value, _) | Printed::Table(value, ..))
        | (_, Printed::Json(value)) => pretty(&value),
        (Output::Table, Printed::Table(_, headers, rows, more)) => {
            let mut table = Table::new();
            table.load_preset(comfy_table::presets::NOTHING);
            table.set_header(headers.to_vec());
            for row in rows {
                table.add_row(row);
            }
            let more = more.map(|m| format!("\n{m}")).unwrap_or_default();
            format!("{table}{more}")
        }
        (Output::Table, Printed::Routes(items, next)) => {
            let mut table = routes_table();
            for route in &items {
                table.add_row(route_row(route));
            }
            let more = next
                .map(|c| format!("\nmore: --cursor {c}"))
                .unwrap_or_default();
            format!("{table}{more}")
        }
        (Output::Table, Printed::Route(route)) => {
            let mut table = routes_table();
            table.add_row(route_row(&route));
            table.to_string()
        }
        (Output::Table, Printed::Value(_, rows)) => {
            let mut table = Table::new();
            table.load_preset(comfy_table::presets::NOTHING);
            for (name, value) in rows {
                table.add_row(vec![name.to_owned(), value]);
            }
            table.to_string()
        }
    };
    let _ = writeln!(out, "{text}");
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).expect("JSON prints")
}

fn routes_table() -> Table {
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(vec![
        "ID", "TENANT", "SERVICE", "ENV", "VERSION", "ACTIVE", "WEIGHT", "REVISION", "URL",
    ]);
    table
}

fn route_row(route: &Route) -> Vec<String> {
    vec![
        route.id.clone(),
        route.tenant.clone(),
        route.service.clone(),
        route.env.clone(),
        route.version.clone(),
        route.active.to_string(),
        route.weight.to_string(),
        route.revision.to_string(),
        route.url.clone(),
    ]
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("tmctl: {message}");
    ExitCode::from(code)
}
