//! The command line: `migrate`, `run`, `drain`, `jobs`, `templates`, `tokens`, `send-test`,
//! `bounces ingest`, `dkim record`.
//! The names are a contract: scripts rely on them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::Settings;
use crate::startup::{App, Parts};
use crate::templates::{self, Force, SyncError, Templates};
use crate::{db, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "adopt-worker",
    version,
    about = "Email delivery and scheduled jobs for Adopt Don't Shop"
)]
pub struct Cli {
    /// Configuration file layered over the built-in defaults.
    #[arg(long, global = true, env = "ADOPT_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database if missing and apply migrations.
    Migrate,
    /// Run workers, scheduled jobs and the HTTP API until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Deliver every row due now, print a summary line, exit.
    Drain,
    /// Scheduled jobs.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Email templates in `templates/`.
    Templates {
        #[command(subcommand)]
        command: TemplatesCommand,
    },
    /// API service tokens.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Send a test email through the real pipeline.
    SendTest(SendTestArgs),
    /// Bounces and complaints that come back by mail.
    Bounces {
        #[command(subcommand)]
        command: BouncesCommand,
    },
    /// DKIM signing keys (`[[dkim.keys]]`).
    Dkim {
        #[command(subcommand)]
        command: DkimCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DkimCommand {
    /// Print the DNS TXT record to publish for a signing domain's key, as a zone-file line:
    /// `<selector>._domainkey.<domain>. IN TXT "v=DKIM1; k=rsa; p=..."`.
    Record {
        /// The signing domain (a `[[dkim.keys]]` domain).
        #[arg(long)]
        domain: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BouncesCommand {
    /// Read one message as an MTA's pipe hands it over (a DSN, an abuse report, anything
    /// sent to the bounce address) and apply it. Exit 0 when applied, ignored or unmatched;
    /// 75 (EX_TEMPFAIL) when the database cannot be reached.
    Ingest {
        /// The message; standard input when absent.
        file: Option<PathBuf>,
        /// The address the message was delivered to (Postfix pipe: `${recipient}`): the
        /// VERP address that names the email.
        #[arg(long, value_name = "ADDR")]
        recipient: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Serve the HTTP API only (no workers, no scheduled jobs).
    #[arg(long, conflicts_with = "no_api")]
    pub api_only: bool,
    /// Run workers and scheduled jobs only (no HTTP API).
    #[arg(long)]
    pub no_api: bool,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Run one scheduled job once.
    Run {
        /// digest, expire-applications, expire-moderation, audit-partitions, reclaim
        name: String,
        /// The job's idea of "now" (RFC 3339), for operators and tests.
        #[arg(long)]
        now: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Upsert every template of `templates/` into email_templates.
    Sync {
        /// Overwrite templates edited in the database since the last sync: the named ones
        /// (restoring any that was deleted), or every live one when no name is given.
        #[arg(long, value_name = "NAME", num_args = 0..)]
        force: Option<Vec<String>>,
    },
    /// Parse and render every template against its examples.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token; prints it once, alone on the last line.
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated: enqueue, read, admin.
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by name.
    Revoke { name: String },
}

#[derive(Debug, Args)]
pub struct SendTestArgs {
    /// Recipient address.
    #[arg(long)]
    pub to: String,
    /// Template name; without it a plain test message is sent.
    #[arg(long)]
    pub template: Option<String>,
    /// Only queue the email (a running worker sends it) instead of delivering it now.
    #[arg(long)]
    pub queue: bool,
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Its own error handling and exit codes (for MTAs), and no log lines: one line on stderr.
    if let Command::Bounces {
        command: BouncesCommand::Ingest { file, recipient },
    } = &cli.command
    {
        return Ok(crate::bounces::run_ingest(
            cli.config.as_deref(),
            file.as_deref(),
            recipient.as_deref(),
        )
        .await);
    }
    let settings = Settings::load(cli.config.as_deref())?;
    telemetry::init(&settings.log);
    match cli.command {
        Command::Migrate => {
            let report = db::create_and_migrate(&settings.database).await?;
            println!(
                "migrate: {}applied {} migration(s), {} in total; pets.location is {}",
                if report.created_database {
                    "created database; "
                } else {
                    ""
                },
                report.applied,
                report.total,
                report.pets_location,
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            let app = App::build(settings)?;
            let parts = Parts {
                workers: !args.api_only,
                api: !args.no_api,
            };
            let listener = if parts.api {
                Some(app.bind().await?)
            } else {
                None
            };
            app.run_until_stopped(listener, parts, crate::startup::shutdown_signal())
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Drain => {
            db::connect(&settings.database).await?;
            let app = App::build(settings)?;
            let tally = app.drain().await.context("drain failed")?;
            println!("drain: {tally}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Jobs {
            command: JobsCommand::Run { name, now },
        } => {
            let job: crate::jobs::JobName = name.parse()?;
            let now = now.map(|text| crate::jobs::parse_now(&text)).transpose()?;
            let pool = db::connect(&settings.database).await?;
            let jobs = crate::jobs::Jobs::new(pool, &settings);
            let report = match now {
                Some(now) => jobs.run_once(job, now).await,
                None => jobs.run_once_now(job).await,
            }
            .with_context(|| format!("job {job} could not be run"))?;
            println!("jobs run: {report}");
            Ok(match report.outcome {
                crate::jobs::RunOutcome::Failed => ExitCode::FAILURE,
                _ => ExitCode::SUCCESS,
            })
        }
        Command::Templates { command } => run_templates(command, &settings).await,
        Command::Tokens { command } => {
            use crate::api::tokens;
            let pool = db::connect(&settings.database).await?;
            match command {
                TokensCommand::Create { name, scopes } => {
                    let scopes = tokens::parse_scopes(&scopes)?;
                    let secret = tokens::create(&pool, &name, &scopes).await?;
                    print!("{}", tokens::created_report(&name, &scopes, &secret));
                }
                TokensCommand::List => {
                    print!("{}", tokens::list_report(&tokens::list(&pool).await?))
                }
                TokensCommand::Revoke { name } => {
                    tokens::revoke(&pool, &name).await?;
                    println!("revoked token {name:?}; requests with it now get 401");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::SendTest(args) => {
            use crate::api::templates::{TestSend, send_test, send_test_claimed};
            let pool = db::connect(&settings.database).await?;
            let templates = crate::templates::Templates::new(pool.clone(), &settings);
            let to = args.to.clone();
            let test = TestSend {
                to: args.to,
                to_name: None,
                template: args.template,
                locale: None,
                data: None,
                created_by: None,
            };
            if args.queue {
                let id = send_test(&pool, &templates, &settings, test).await?;
                println!(
                    "send-test: queued {id} to {to} (urgent); a running worker sends it, or run `adopt-worker drain`"
                );
                return Ok(ExitCode::SUCCESS);
            }
            let (id, claimed) = send_test_claimed(&pool, &templates, &settings, test).await?;
            let Some(email) = claimed else {
                bail!("the test email {id} was inserted but could not be claimed");
            };
            let app = App::build(settings)?;
            send_test_now(&app, email, &to).await
        }
        Command::Dkim {
            command: DkimCommand::Record { domain },
        } => {
            let signer = crate::delivery::dkim::Signer::from_settings(&settings.dkim)?;
            println!("{}", signer.dns_record(&domain)?);
            Ok(ExitCode::SUCCESS)
        }
        // Handled before the settings are loaded, above.
        Command::Bounces { .. } => Ok(ExitCode::SUCCESS),
    }
}

/// Delivers the test email `id` now through the configured transport, records the row as
/// a worker would, and says what the relay answered; non-zero exit unless it was sent.
async fn send_test_now(
    app: &App,
    email: crate::queue::ClaimedEmail,
    to: &str,
) -> anyhow::Result<ExitCode> {
    use crate::delivery::Outcome;
    let transport = app.deliverer.transport().describe();
    let id = email.email_id;
    let (outcome, _) = app.deliverer.deliver_reporting(email).await;
    app.deliverer.transport().close().await;
    let failed = |class: &str, reason: &str, row: &str| {
        eprintln!(
            "send-test: {id} to {to} via {transport} FAILED ({class}): {reason}; the row is {row}"
        );
        Ok(ExitCode::FAILURE)
    };
    match outcome {
        Outcome::Sent(accepted) => {
            println!(
                "send-test: sent {id} to {to} via {transport}: {}",
                accepted.reply
            );
            if let Some(queue_id) = &accepted.provider_message_id {
                println!("send-test: provider_message_id {queue_id}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Retry { failure, delay } => failed(
            &format!("transient, class {}", failure.metric_class().as_str()),
            &failure.reason,
            &format!("queued for a retry in {}s", delay.as_secs()),
        ),
        Outcome::Bounced(failure) => failed(
            "hard bounce: the recipient was blacklisted",
            &failure.reason,
            "bounced",
        ),
        Outcome::Failed { reason } => failed("permanent", &reason, "failed"),
        Outcome::Unsubscribed { reason } => failed("unsubscribed", &reason, "unsubscribed"),
        Outcome::HeldForDigest => failed("held", "held for the recipient's digest", "held"),
        Outcome::Released => failed(
            "not sent",
            "no relay connection came free within the lease",
            "queued",
        ),
    }
}

/// `templates check` (no database needed) and `templates sync [--force]`. Problems go to
/// stderr as `file:line:col: message`, one per line, and make the exit status non-zero.
async fn run_templates(command: TemplatesCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    let dir = &settings.templates.dir;
    let print_check = |report: &templates::CheckReport| {
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        for p in &report.problems {
            eprintln!("{p}");
        }
    };
    match command {
        TemplatesCommand::Check => {
            let report = templates::check(dir, settings);
            print_check(&report);
            if !report.is_ok() {
                bail!(
                    "templates check: {} problem(s) in {}",
                    report.problems.len(),
                    dir.display()
                );
            }
            println!(
                "templates check: {} template(s) in {} parse and render with their examples",
                report.checked.len(),
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        TemplatesCommand::Sync { force } => {
            let pool = db::connect(&settings.database).await?;
            // Sync renders nothing that is sent, so no tracker (and no warning about one).
            let handle = Templates::with_tracker(pool, settings, None);
            let force = match force {
                None => Force::None,
                Some(names) if names.is_empty() => Force::All,
                Some(names) => Force::Names(names),
            };
            match handle.sync(dir, &force).await {
                Ok((report, check)) => {
                    print_check(&check);
                    for entry in &report.entries {
                        println!("{entry}");
                    }
                    for note in &report.notes {
                        eprintln!("note: {note}");
                    }
                    println!("templates sync: {report}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(SyncError::Invalid(check)) => {
                    print_check(&check);
                    bail!(
                        "templates sync: {} problem(s) in {}; nothing was written",
                        check.problems.len(),
                        dir.display()
                    )
                }
                Err(e) => Err(anyhow::Error::new(e).context("templates sync failed")),
            }
        }
    }
}
