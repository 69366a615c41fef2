//! `shiplog`: one line in a CI step to roll out a stack through Shiplog.
//!
//! Prints the deployment id on stdout (so `ID=$(shiplog redeploy …)` works) and progress on
//! stderr. Exit codes: 0 success, 1 the deployment failed, 2 the request was refused
//! (input, key, permission), 3 Shiplog unreachable or failing, 4 `--wait` ran out of time.

mod client;
mod follow;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use client::{CliError, Client, Credential};

#[derive(Parser)]
#[command(
    name = "shiplog",
    version,
    about = "Shiplog's CI client: hooks, deployment status, API keys"
)]
struct Cli {
    /// Shiplog's address, e.g. https://shiplog.example.com
    #[arg(
        long,
        env = "SHIPLOG_URL",
        global = true,
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// API key (`rsgo_…`) for hooks and deployment status.
    #[arg(long, env = "SHIPLOG_API_KEY", global = true, hide_env_values = true)]
    api_key: Option<String>,
    /// Admin token, for `keys` (and for `status` instead of a key; hooks need a key).
    #[arg(
        long,
        env = "SHIPLOG_ADMIN_TOKEN",
        global = true,
        hide_env_values = true
    )]
    admin_token: Option<String>,
    /// Sent as X-Request-Id: it becomes the correlation id of the deployment's events.
    #[arg(long, env = "SHIPLOG_REQUEST_ID", global = true)]
    request_id: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Wait {
    /// Follow the deployment and exit with its result.
    #[arg(long)]
    wait: bool,
    /// Seconds `--wait` follows before giving up (the deployment goes on).
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Run a stack's current version again with freshly pulled images.
    Redeploy {
        #[arg(long)]
        stack: String,
        /// Environment id; may be left out when the key is scoped to one.
        #[arg(long = "env")]
        environment: Option<String>,
        /// Recreate containers even when image and configuration are unchanged.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Deploy another catalog version of a stack.
    Upgrade {
        #[arg(long)]
        stack: String,
        #[arg(long)]
        version: String,
        #[arg(long = "env")]
        environment: Option<String>,
        /// A variable, KEY=VALUE; repeat for more.
        #[arg(long = "var", value_name = "KEY=VALUE")]
        variables: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Restart a stack's containers (stop, then start in dependency order).
    RestartContainers {
        #[arg(long)]
        stack: String,
        #[arg(long = "env")]
        environment: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Stop a stack's containers (they are kept; restart or redeploy brings them back).
    StopContainers {
        #[arg(long)]
        stack: String,
        #[arg(long = "env")]
        environment: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Re-read every catalog source.
    SyncSources,
    /// Show a deployment (and follow it with --wait).
    Status {
        id: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// API keys (admin token).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; the key itself is printed once, on stdout.
    Create {
        #[arg(long)]
        name: String,
        /// Hooks.Redeploy, Hooks.Upgrade, Hooks.Deploy, Hooks.SyncSources, Hooks.Rollback,
        /// Hooks.RestartContainers, Hooks.StopContainers, Hooks.* or *.*; repeat for more.
        #[arg(long = "permission", required = true)]
        permissions: Vec<String>,
        #[arg(long = "env")]
        environment: Option<String>,
        /// RFC 3339 time after which the key no longer works.
        #[arg(long)]
        expires_at: Option<String>,
        /// Limit the key to this stack; repeat for more (default: every stack).
        #[arg(long = "stack")]
        stacks: Vec<String>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key.
    Revoke {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shiplog: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn parse_variables(pairs: &[String]) -> Result<Map<String, Value>, CliError> {
    let mut variables = Map::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| CliError::Usage(format!("--var wants KEY=VALUE, not '{pair}'")))?;
        variables.insert(key.to_owned(), Value::String(value.to_owned()));
    }
    Ok(variables)
}

async fn run(cli: Cli) -> Result<(), CliError> {
    // Hooks take only API keys; reading a deployment takes a key or the admin token.
    let hook_key = || {
        cli.api_key.clone().map(Credential::ApiKey).ok_or_else(|| {
            CliError::Usage("hooks need an API key: set SHIPLOG_API_KEY (or --api-key)".into())
        })
    };
    let reader = cli
        .api_key
        .clone()
        .map(Credential::ApiKey)
        .or_else(|| cli.admin_token.clone().map(Credential::Admin));
    match cli.command {
        Command::Redeploy {
            stack,
            environment,
            force,
            wait,
        } => {
            let client = Client::new(&cli.url, Some(hook_key()?), cli.request_id)?;
            let mut body = json!({ "stackName": stack, "force": force });
            if let Some(env) = environment {
                body["environmentId"] = json!(env);
            }
            hook(&client, "redeploy", body, &wait).await
        }
        Command::Upgrade {
            stack,
            version,
            environment,
            variables,
            wait,
        } => {
            let client = Client::new(&cli.url, Some(hook_key()?), cli.request_id)?;
            let mut body = json!({
                "stackName": stack,
                "targetVersion": version,
                "variables": parse_variables(&variables)?,
            });
            if let Some(env) = environment {
                body["environmentId"] = json!(env);
            }
            hook(&client, "upgrade", body, &wait).await
        }
        Command::RestartContainers {
            stack,
            environment,
            wait,
        } => {
            let client = Client::new(&cli.url, Some(hook_key()?), cli.request_id)?;
            hook(
                &client,
                "restart-containers",
                stack_body(stack, environment),
                &wait,
            )
            .await
        }
        Command::StopContainers {
            stack,
            environment,
            wait,
        } => {
            let client = Client::new(&cli.url, Some(hook_key()?), cli.request_id)?;
            hook(
                &client,
                "stop-containers",
                stack_body(stack, environment),
                &wait,
            )
            .await
        }
        Command::SyncSources => {
            let client = Client::new(&cli.url, Some(hook_key()?), cli.request_id)?;
            let answer = client
                .json(client.request(Method::POST, "/api/hooks/sync-sources"))
                .await?;
            println!("{answer}");
            Ok(())
        }
        Command::Status { id, wait } => {
            let client = Client::new(&cli.url, reader, cli.request_id)?;
            let deployment = client
                .json(client.request(Method::GET, &format!("/api/deployments/{id}")))
                .await?;
            println!("{deployment}");
            if wait.wait {
                follow::follow(&client, &id, Duration::from_secs(wait.timeout)).await?;
            }
            Ok(())
        }
        Command::Keys { command } => {
            let token = cli.admin_token.ok_or_else(|| {
                CliError::Usage("keys commands need the admin token (SHIPLOG_ADMIN_TOKEN)".into())
            })?;
            let client = Client::new(&cli.url, Some(Credential::Admin(token)), cli.request_id)?;
            keys(&client, command).await
        }
    }
}

/// `{"stackName", "environmentId"?}`: the body of the container hooks.
fn stack_body(stack: String, environment: Option<String>) -> Value {
    let mut body = json!({ "stackName": stack });
    if let Some(env) = environment {
        body["environmentId"] = json!(env);
    }
    body
}

async fn hook(client: &Client, name: &str, body: Value, wait: &Wait) -> Result<(), CliError> {
    let answer = client
        .json(
            client
                .request(Method::POST, &format!("/api/hooks/{name}"))
                .json(&body),
        )
        .await?;
    let id = answer["deploymentId"]
        .as_str()
        .ok_or_else(|| CliError::Unavailable(format!("no deploymentId in the answer: {answer}")))?
        .to_owned();
    println!("{id}");
    eprintln!(
        "{}",
        answer["message"].as_str().unwrap_or("deployment requested")
    );
    if wait.wait {
        follow::follow(client, &id, Duration::from_secs(wait.timeout)).await?;
        eprintln!("deployment {id} succeeded");
    }
    Ok(())
}

async fn keys(client: &Client, command: KeysCommand) -> Result<(), CliError> {
    match command {
        KeysCommand::Create {
            name,
            permissions,
            environment,
            expires_at,
            stacks,
        } => {
            let mut body = json!({ "name": name, "permissions": permissions });
            if !stacks.is_empty() {
                body["stacks"] = json!(stacks);
            }
            if let Some(env) = environment {
                body["environmentId"] = json!(env);
            }
            if let Some(at) = expires_at {
                body["expiresAt"] = json!(at);
            }
            let created = client
                .json(client.request(Method::POST, "/api/keys").json(&body))
                .await?;
            // The key alone on stdout (shown once); the rest for the operator.
            println!("{}", created["key"].as_str().unwrap_or_default());
            eprintln!(
                "created key {} ({}); store it now: it is not shown again",
                created["id"].as_str().unwrap_or("?"),
                created["name"].as_str().unwrap_or("?")
            );
        }
        KeysCommand::List => {
            let keys = client
                .json(client.request(Method::GET, "/api/keys"))
                .await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&keys).unwrap_or_default()
            );
        }
        KeysCommand::Revoke { id, reason } => {
            let mut req = client.request(Method::DELETE, &format!("/api/keys/{id}"));
            if let Some(reason) = reason {
                req = req.query(&[("reason", reason)]);
            }
            let response = client.send(req).await?;
            let status = response.status();
            if !status.is_success() {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                return Err(client::error_of(status, &body));
            }
            eprintln!("revoked key {id}");
        }
    }
    Ok(())
}
