//! The command line: `coherency [--config FILE] serve | migrate | create-admin | seed-demo |
//! audit verify`. Each command loads the layered config, then calls into the library. Only
//! `serve` binds the HTTP port and starts a node's background work; the others run beside a
//! running server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::Config;
use crate::input::{invalid, EmailAddress, PersonName};
use crate::services::identity::NewStaff;

#[derive(Parser, Debug)]
#[command(name = "coherency", version, about = "Telehealth and LiDAR wound-scan streaming server")]
pub struct Cli {
    /// Optional TOML file with settings (environment variables override it).
    #[arg(long, global = true, env = "COHERENCY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Connect to the services, apply migrations and serve HTTP and sockets.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Create an administrator account; the password is read from standard input.
    CreateAdmin {
        #[arg(long)]
        email: String,
        /// Display name.
        #[arg(long, default_value = "Administrator")]
        name: String,
    },
    /// Load the demo clinic (idempotent).
    SeedDemo,
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the hash chain; names the first broken link.
    Verify,
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let matches = Cli::command().after_help(Config::help_table()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("coherency: {e}");
            return ExitCode::from(2);
        }
    };
    crate::telemetry::init(&config);
    let system = actix_web::rt::System::new();
    match system.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coherency: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let app = crate::Application::build(config).await?;
            tracing::info!(port = app.port(), "listening");
            app.run_until_stopped().await?;
        }
        Command::Migrate => {
            let pool = crate::store::pg::connect(&config).await?;
            let n = crate::store::pg::migrate(&pool).await?;
            println!("migrations applied: {n}");
        }
        Command::CreateAdmin { email, name } => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']).to_string();
            let state = crate::startup::tool_state(config).await?;
            let shown = |e: crate::error::ApiError| {
                anyhow::anyhow!("{}: {}{}", e.code, e.field.map(|f| format!("{f} ")).unwrap_or_default(), e.message)
            };
            // The same rules as the body of `POST /v1/admin/users`: parsed here, checked by
            // the identity service.
            let email = EmailAddress::new(email.trim()).map_err(|why| shown(invalid("email", why)))?;
            let display_name = PersonName::new(name).map_err(|why| shown(invalid("display_name", why)))?;
            let staff = NewStaff {
                email: email.normalise().into_inner(),
                password,
                display_name: display_name.into_inner(),
                role: crate::auth::Role::Admin,
            };
            let id = state.identity.create_staff(staff).await.map_err(|e| shown(e.into()))?.as_uuid();
            crate::audit::record(
                &state.stores.pg,
                state.clock.now(),
                &crate::audit::AuditEvent::new("user.create_admin_cli", "success").target("user", id),
            )
            .await?;
            println!("admin created: {id}");
        }
        Command::SeedDemo => {
            let state = crate::startup::tool_state(config).await?;
            let logins = crate::demo::seed(&state).await?;
            println!("Demo logins (passwords are new on every seed-demo run):");
            for l in logins {
                match l.totp_secret {
                    Some(s) => println!("  {:<10} {:<34} {}   TOTP secret {}", l.role.as_str(), l.email, l.password, s),
                    None => println!("  {:<10} {:<34} {}", l.role.as_str(), l.email, l.password),
                }
            }
        }
        Command::Audit { command: AuditCommand::Verify } => {
            let pool = crate::store::pg::connect(&config).await?;
            match crate::audit::verify(&pool).await? {
                crate::audit::Verdict::Intact(n) => println!("audit trail intact: {n} rows"),
                crate::audit::Verdict::Broken { id, reason } => {
                    anyhow::bail!("audit trail broken at row {id}: {reason}");
                }
            }
        }
    }
    Ok(())
}
