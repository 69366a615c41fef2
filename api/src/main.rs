use clap::{Parser, Subcommand};
use shiplog_api::config::Config;
use shiplog_api::startup::Application;
use shiplog_api::telemetry;
use shiplog_events::{db, projection};

/// Shiplog's HTTP API: CI/CD hooks, administration and deployment status.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Read models.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
}

#[derive(Subcommand)]
enum ProjectionsCommand {
    /// Drop every projection and replay the whole event log into it.
    Rebuild,
}

/// One-off commands wait longer for the database than requests do.
const COMMAND_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.config.log_json);
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("shiplog-api: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(&cli.config).await?;
            tracing::info!(port = app.port(), "shiplog-api listening");
            app.run_until_stopped().await?;
        }
        Command::Migrate => {
            let pool = db::connect(&cli.config.database_url, 2, COMMAND_ACQUIRE_TIMEOUT).await?;
            db::migrate(&pool).await?;
            println!("migrations applied");
        }
        Command::Projections {
            command: ProjectionsCommand::Rebuild,
        } => {
            let pool = db::connect(&cli.config.database_url, 2, COMMAND_ACQUIRE_TIMEOUT).await?;
            db::migrate(&pool).await?;
            let mut tx = pool.begin().await?;
            let replayed = projection::rebuild(&mut tx).await?;
            tx.commit().await?;
            println!("projections rebuilt from {replayed} events");
        }
    }
    Ok(())
}
