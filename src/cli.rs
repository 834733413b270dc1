//! The command line: `coherency [--config FILE] serve | migrate | create-admin | seed-demo |
//! audit verify | totp-code`. Each command loads the layered config, then calls into the
//! library (`totp-code` needs none: it only does arithmetic on the secret it is given). Only
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
    /// Print the authenticator code a TOTP secret gives now (what an authenticator app would
    /// show), and how long it stays valid; for the demo logins `seed-demo` prints.
    TotpCode {
        /// The base32 secret.
        secret: String,
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
    if let Command::TotpCode { secret } = &cli.command {
        return totp_code(secret);
    }
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

fn totp_code(secret: &str) -> ExitCode {
    let now = chrono::Utc::now();
    match crate::auth::totp::code_at(secret.trim(), now) {
        Some(code) => {
            println!(
                "{code}  (valid for {} more seconds; each code signs in once)",
                30 - now.timestamp().rem_euclid(30)
            );
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("coherency: not a base32 TOTP secret");
            ExitCode::from(2)
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
            let me = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "coherency".into());
            for l in logins {
                println!("  {:<10} {:<34} {}", l.role.as_str(), l.email, l.password);
                if let Some(s) = l.totp_secret {
                    // Staff sign in with a code: add the secret to an authenticator app, or make one here.
                    if let Some(uri) = crate::auth::totp::uri(&s, &l.email, "Coherency") {
                        println!("  {:<10} authenticator app: {uri}", "");
                    }
                    println!("  {:<10} a code now: {me} totp-code {s}", "");
                }
            }
        }
        // Answered in `main` before any configuration is read.
        Command::TotpCode { .. } => {}
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
