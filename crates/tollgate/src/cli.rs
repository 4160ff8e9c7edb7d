//! The command line: `serve`, `check-config`, and admin chores that work on the store directly
//! (useful before any admin key exists, or when one is lost).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use tollgate_core::account::Role;
use tollgate_core::calendar::{self, MAX_MS, MIN_MS};
use tollgate_core::clock::{SharedClock, SystemClock};
use tollgate_core::credit::CreditKind;
use tollgate_core::money::{nanos_to_usd_string, parse_decimal_scaled};
use tollgate_core::pricing::{import_litellm, PriceTable};
use tollgate_core::store::{RecordStore, Store};
use tollgate_engine::credits::Credits;
use tollgate_engine::keys::KeyService;

use crate::app::{imported_prices_path, load_price_table, open_store, Application};
use crate::config::{self, Config};

#[derive(Parser, Debug)]
#[command(
    name = "tollgate",
    version,
    about = "A self-hosted LLM API gateway that meters every token"
)]
pub struct Cli {
    /// Config file (TOML). Default: ./tollgate.toml if present. TOLLGATE_* variables override it.
    #[arg(long, global = true, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the gateway.
    Serve,
    /// Validate the configuration and print what it resolves to.
    CheckConfig,
    /// Manage accounts.
    #[command(subcommand)]
    Accounts(AccountsCmd),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Inspect or import model prices.
    #[command(subcommand)]
    Prices(PricesCmd),
    /// Grant, refund and audit credits.
    #[command(subcommand)]
    Credits(CreditsCmd),
    /// Create or migrate the store's schema, and print its version (`serve` does this too).
    Migrate,
    /// Work on a replica's journal.
    #[command(subcommand)]
    Journal(JournalCmd),
    /// Move a store's contents to another backend.
    #[command(subcommand)]
    Store(StoreCmd),
}

#[derive(Subcommand, Debug)]
pub enum StoreCmd {
    /// Copy an embedded install into PostgreSQL: accounts, keys, credits, provider keys and
    /// records (the target rebuilds the rollups), then check record counts and every account's
    /// credit audit on both sides. Stop the gateway first. Running it again copies nothing twice.
    Copy {
        /// The SQLite database: `sqlite:PATH` (e.g. sqlite:data/tollgate.db).
        #[arg(long)]
        from: String,
        /// The PostgreSQL database: `postgres://user@host/db` (created or migrated).
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum JournalCmd {
    /// Deliver a journal left by a replica that will not come back (its `data_dir/journal`,
    /// from any machine) to the configured store. Records already stored are skipped, so
    /// replaying twice, or replaying a journal its replica also replayed, counts nothing twice.
    Replay { dir: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum CreditsCmd {
    /// Add credits to an account (a running gateway sees it within 5 seconds).
    Grant {
        #[arg(long)]
        account: String,
        /// Amount in USD, as decimal text (e.g. 10.50).
        #[arg(long)]
        usd: String,
        /// The same key twice grants once.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Record a refund rather than a grant.
        #[arg(long)]
        refund: bool,
        #[arg(long)]
        note: Option<String>,
    },
    /// balance = grants − charges + refunds, with the entries behind it.
    Audit {
        #[arg(long)]
        account: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AccountsCmd {
    Create { name: String },
    List,
}

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Issue a key; it is printed once and stored only as a hash.
    Create {
        #[arg(long)]
        account: String,
        #[arg(long, default_value = "default")]
        name: String,
        /// An admin key (may call /admin and read every account).
        #[arg(long)]
        admin: bool,
    },
    List {
        #[arg(long)]
        account: Option<String>,
    },
    Revoke {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum PricesCmd {
    /// The effective price table (USD per million tokens).
    List,
    /// Import LiteLLM's model_prices_and_context_window.json; config [prices] still win.
    Import { file: PathBuf },
    /// What recorded requests would have cost under another price table, per model and in
    /// total, beside what they cost and were charged. Reads the store; changes nothing.
    Reprice {
        /// A price file (tollgate's `{"models": [...]}` or LiteLLM's JSON); without it, the
        /// table this config prices with now.
        #[arg(long)]
        prices: Option<PathBuf>,
        /// From this date (YYYY-MM-DD, UTC), RFC 3339 time or Unix seconds.
        #[arg(long)]
        from: Option<String>,
        /// To this date (inclusive), RFC 3339 time or Unix seconds (exclusive).
        #[arg(long)]
        to: Option<String>,
        /// Only this account.
        #[arg(long)]
        account: Option<String>,
        /// Print the JSON `POST /admin/reprice` answers, instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = config::load(cli.config.as_deref())?;
    let clock: SharedClock = Arc::new(SystemClock);
    match cli.command {
        Command::Serve => serve(config).await,
        Command::CheckConfig => check_config(&config),
        Command::Prices(cmd) => prices(config, cmd).await,
        // Chores on the store: opened once, here.
        Command::Accounts(cmd) => accounts(&config, &open_store(&config).await?, clock, cmd).await,
        Command::Keys(cmd) => keys(&config, &open_store(&config).await?, clock, cmd).await,
        Command::Credits(cmd) => credits(&config, open_store(&config).await?, clock, cmd).await,
        Command::Migrate => migrate(&config).await,
        Command::Journal(JournalCmd::Replay { dir }) => replay(&config, &dir).await,
        Command::Store(StoreCmd::Copy { from, to }) => store_copy(&config, &from, &to).await,
    }
}

async fn store_copy(config: &Config, from: &str, to: &str) -> anyhow::Result<()> {
    use tollgate_engine::copy;
    let Some(path) = from.strip_prefix("sqlite:") else {
        anyhow::bail!("--from must be sqlite:PATH (got {from:?})");
    };
    let path = std::path::Path::new(path);
    // Opening a missing file would create an empty store and "copy" nothing.
    if !path.is_file() {
        anyhow::bail!("--from: no SQLite database at {}", path.display());
    }
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        anyhow::bail!("--to must be a postgres:// URL");
    }
    let source = tollgate_store::SqliteStore::open(path)?;
    // Under a name no replica uses: the records' charges come from each account's pool.
    let target =
        tollgate_store::PgStore::connect(to, config.store.pool_size.min(4), "store-copy").await?;

    let total = u64::try_from(source.count_usage().await?).unwrap_or(0);
    // Drawn on stderr, and only on a terminal.
    let bar =
        indicatif::ProgressBar::new(total).with_style(indicatif::ProgressStyle::with_template(
            "copying records {bar:40} {pos}/{len} ({per_sec}, {eta} left)",
        )?);
    let copied = copy::copy(&source, &target, |n| bar.inc(n)).await?;
    bar.finish_and_clear();
    println!(
        "copied from {} to PostgreSQL: {} account(s) new ({} updated), {} key(s) new ({} updated), \
         {} credit entr(ies) new, {} provider key(s), {} record(s) read, {} new",
        path.display(),
        copied.accounts,
        copied.accounts_updated,
        copied.keys,
        copied.keys_updated,
        copied.credits,
        copied.provider_keys,
        copied.records_read,
        copied.records
    );

    let v = copy::verify(&source, &target).await?;
    println!(
        "records: {} in the source, {} in the target",
        v.records_from, v.records_to
    );
    println!("account\tname\tgrants\trefunds\tcharges\tbalance (USD, source = target)");
    for a in &v.accounts {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            a.account_id,
            a.name,
            nanos_to_usd_string(a.from.grants_nanos),
            nanos_to_usd_string(a.from.refunds_nanos),
            nanos_to_usd_string(a.from.charges_nanos),
            nanos_to_usd_string(a.from.balance_nanos()),
        );
    }
    if !v.mismatches.is_empty() {
        for m in &v.mismatches {
            eprintln!("mismatch: {m}");
        }
        anyhow::bail!(
            "the copy does not match its source ({} mismatch(es) above); fix the cause and run \
             it again (nothing already copied is copied twice)",
            v.mismatches.len()
        );
    }
    println!("verified: record counts and every account's credit audit and rollups match");
    Ok(())
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    match config.store.kind {
        tollgate_core::config::StoreKind::Sqlite => {
            open_store(config).await?;
            println!(
                "sqlite store at {} is at the current schema",
                config.sqlite_path().display()
            );
        }
        tollgate_core::config::StoreKind::Postgres => {
            let url = config.store.url.as_deref().unwrap_or_default();
            let store = tollgate_store::PgStore::connect_unmigrated(url, 1, "migrate")?;
            let (applied, version) = store.migrate().await?;
            println!("postgres store: applied {applied} schema step(s); schema version {version}");
        }
    }
    Ok(())
}

async fn replay(config: &Config, dir: &std::path::Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        anyhow::bail!(
            "{} is not a directory (a replica's data_dir/journal)",
            dir.display()
        );
    }
    // Under a name of its own: the records' charges come from the account's unleased balance,
    // never from a live replica's lease (the dead replica's lease returns when it expires).
    let store = tollgate_store::open(config, "journal-replay").await?;
    let before = store.count_usage().await?;
    let ledger = tollgate_engine::ledger::Ledger::start(
        store.clone(),
        tollgate_engine::ledger::LedgerOptions::from_config(
            config,
            dir.to_path_buf(),
            dir.join("dead-letter.ndjson"),
        ),
        Vec::new(),
        tollgate_engine::settle::interrupted_record,
    )
    .await?;
    ledger.flush().await;
    let after = store.count_usage().await?;
    println!(
        "replayed {}: {} new record(s) stored ({} were stored already or none were left)",
        dir.display(),
        after - before,
        if after == before { "all" } else { "the rest" }
    );
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let data_dir = config.server.data_dir.clone();
    let app = Application::build(config).await?;
    let addr = app.local_addr()?;
    println!(
        "tollgate listening on http://{addr} (data in {})",
        data_dir.display()
    );
    match &app.bootstrap_admin_key {
        Some(k) => {
            println!();
            println!(
                "First start: created an admin key. It is shown only this once; store it now:"
            );
            println!();
            println!("    {}", k.key);
            println!();
            println!("Next: create an account and a key for it, e.g.");
            println!("    curl -s http://{addr}/admin/accounts -H 'Authorization: Bearer <admin key>' -d '{{\"name\":\"team-a\"}}'");
            println!("    curl -s http://{addr}/admin/accounts/<account id>/keys -H 'Authorization: Bearer <admin key>' -d '{{\"name\":\"laptop\"}}'");
            println!("or: tollgate accounts create team-a && tollgate keys create --account <account id>");
            println!("Then point an SDK at the gateway with that key:");
            println!("    OpenAI SDK:    base_url = \"http://{addr}/v1\"");
            println!(
                "    Anthropic SDK: base_url = \"http://{addr}\"  (it adds /v1/messages itself)"
            );
        }
        None => println!(
            "Admin keys exist already. A new one: tollgate keys create --account <id> --admin"
        ),
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    app.run_with_shutdown(shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

fn check_config(config: &Config) -> anyhow::Result<()> {
    let prices = load_price_table(config)?;
    println!("config OK");
    println!("  listen: {}", config.server.listen);
    println!("  data_dir: {}", config.server.data_dir.display());
    println!(
        "  store: {} at {}",
        config.store.kind.as_str(),
        config.sqlite_path().display()
    );
    for (name, p) in &config.providers {
        let key = if p.resolve_key(|v| std::env::var(v).ok()).is_some() {
            "set"
        } else {
            "MISSING"
        };
        println!(
            "  provider {name}: {:?} {} key {key}; models {:?}",
            p.kind, p.base_url, p.models
        );
        if key == "MISSING" {
            println!(
                "    (requests for these models get 503 until providers.{name}.api_key or ${} is set)",
                p.api_key_env.as_deref().unwrap_or("<api_key_env>")
            );
        }
    }
    println!("  prices: {} models", prices.len());
    Ok(())
}

fn key_service(config: &Config, store: &Arc<dyn Store>, clock: SharedClock) -> KeyService {
    // No cache: each CLI call is one request.
    KeyService::new(
        store.clone(),
        clock,
        config.server.key_prefix.clone(),
        Duration::from_secs(0),
    )
}

async fn accounts(
    config: &Config,
    store: &Arc<dyn Store>,
    clock: SharedClock,
    cmd: AccountsCmd,
) -> anyhow::Result<()> {
    match cmd {
        AccountsCmd::Create { name } => {
            let a = key_service(config, store, clock)
                .create_account(&name)
                .await?;
            println!("{}", serde_json::to_string_pretty(&a)?);
        }
        AccountsCmd::List => {
            for a in store.list_accounts().await? {
                println!(
                    "{}\t{}\t{}",
                    a.id,
                    a.name,
                    if a.disabled { "disabled" } else { "active" }
                );
            }
        }
    }
    Ok(())
}

async fn keys(
    config: &Config,
    store: &Arc<dyn Store>,
    clock: SharedClock,
    cmd: KeysCmd,
) -> anyhow::Result<()> {
    let svc = key_service(config, store, clock);
    match cmd {
        KeysCmd::Create {
            account,
            name,
            admin,
        } => {
            let role = if admin { Role::Admin } else { Role::User };
            let k = svc.issue(&account, &name, role, Default::default()).await?;
            println!("{}", serde_json::to_string_pretty(&k)?);
            eprintln!("The key is shown only this once.");
        }
        KeysCmd::List { account } => {
            for k in store.list_keys(account).await? {
                let state = if k.revoked_at_ms.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{}\t{}\t{}…{}\t{}\t{}",
                    k.id,
                    k.account_id,
                    k.prefix,
                    k.last4,
                    k.role.as_str(),
                    state
                );
            }
        }
        KeysCmd::Revoke { id } => {
            let k = svc.revoke(&id).await?;
            println!("revoked {}", k.id);
        }
    }
    Ok(())
}

/// A `--from` / `--to` bound: a UTC date (its start, or with `end` the next day's), an RFC 3339
/// time or Unix seconds.
fn bound(v: Option<&str>, end: bool, default: i64) -> anyhow::Result<i64> {
    let Some(v) = v else { return Ok(default) };
    calendar::parse_tz("UTC")
        .and_then(|utc| calendar::parse_instant(v, utc, end))
        .ok_or_else(|| {
            anyhow::anyhow!("`{v}` is not a date (YYYY-MM-DD), an RFC 3339 time or Unix seconds")
        })
}

async fn reprice_cmd(
    config: &Config,
    prices: Option<PathBuf>,
    (from, to): (Option<String>, Option<String>),
    account: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let table = match &prices {
        Some(f) => PriceTable::from_file(&std::fs::read_to_string(f)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?,
        None => load_price_table(config)?,
    };
    let start = bound(from.as_deref(), false, MIN_MS)?;
    let end = bound(to.as_deref(), true, MAX_MS)?;
    anyhow::ensure!(end > start, "--to must be after --from");
    let store = open_store(config).await?;
    let out = tollgate_engine::reports::reprice(&*store, &table, account.as_deref(), start, end)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let usd = |n: i64| nanos_to_usd_string(n);
    println!(
        "re-priced with {} ({} models)",
        table.version(),
        table.len()
    );
    println!("model\trequests\tcost_usd\trepriced_usd\tdifference_usd");
    for m in &out.models {
        let (r, d) = match (m.repriced_cost_nanos, m.difference_nanos) {
            (Some(r), Some(d)) => (usd(r), usd(d)),
            _ => ("(no price)".to_string(), "-".to_string()),
        };
        println!(
            "{}\t{}\t{}\t{r}\t{d}",
            m.model,
            m.requests,
            usd(m.cost_nanos)
        );
    }
    let t = &out.totals;
    println!(
        "total\t{}\t{}\t{}\t{}",
        t.requests,
        usd(t.cost_nanos),
        usd(t.repriced_cost_nanos.saturating_add(t.unpriced_cost_nanos)),
        usd(t.difference_nanos)
    );
    println!("charged (credits debited): {} USD", usd(t.charged_nanos));
    if t.unpriced_cost_nanos > 0 {
        println!(
            "models the table does not price are counted at their recorded cost ({} USD)",
            usd(t.unpriced_cost_nanos)
        );
    }
    if t.unreproduced > 0 {
        println!(
            "warning: {} records' own unit prices do not reproduce their recorded cost",
            t.unreproduced
        );
    }
    Ok(())
}

async fn prices(config: Config, cmd: PricesCmd) -> anyhow::Result<()> {
    match cmd {
        PricesCmd::List => {
            let table = load_price_table(&config)?;
            let mut entries: Vec<_> = table.iter().collect();
            entries.sort_by(|a, b| (&a.owned_by, &a.model).cmp(&(&b.owned_by, &b.model)));
            println!("model\towned_by\tinput\toutput\tcached_input\tmax_output_tokens");
            for e in entries {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    e.model,
                    e.owned_by,
                    nanos_to_usd_string(e.prices.input),
                    nanos_to_usd_string(e.prices.output),
                    nanos_to_usd_string(e.prices.cached_input),
                    e.max_output_tokens
                );
            }
        }
        PricesCmd::Reprice {
            prices,
            from,
            to,
            account,
            json,
        } => reprice_cmd(&config, prices, (from, to), account, json).await?,
        PricesCmd::Import { file } => {
            let text = std::fs::read_to_string(&file)?;
            let entries = import_litellm(&text)?;
            tollgate_engine::fs::create_private_dir(&config.server.data_dir)?;
            tollgate_engine::fs::write_private(&imported_prices_path(&config), text.as_bytes())?;
            println!(
                "imported {} priced models from {}; restart the gateway to use them",
                entries.len(),
                file.display()
            );
        }
    }
    Ok(())
}

async fn credits(
    config: &Config,
    store: Arc<dyn Store>,
    clock: SharedClock,
    cmd: CreditsCmd,
) -> anyhow::Result<()> {
    let credits = Credits::new(
        store.clone(),
        config.credits.clone(),
        clock.clone(),
        config.store.lease_secs,
    );
    match cmd {
        CreditsCmd::Grant {
            account,
            usd,
            idempotency_key,
            refund,
            note,
        } => {
            if store.get_account(&account).await?.is_none() {
                anyhow::bail!("no account {account}");
            }
            let amount = parse_decimal_scaled(&usd, 9)?;
            let kind = if refund {
                CreditKind::Refund
            } else {
                CreditKind::Grant
            };
            let (entry, created) = credits
                .add(
                    &account,
                    kind,
                    amount,
                    idempotency_key,
                    note,
                    clock.now_ms(),
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&entry)?);
            if !created {
                eprintln!("(already granted under this idempotency key: nothing added)");
            }
        }
        CreditsCmd::Audit { account } => {
            let audit = credits.audit(&account).await?;
            println!("{}", serde_json::to_string_pretty(&audit)?);
        }
    }
    Ok(())
}
