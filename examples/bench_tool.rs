//! Helpers for `scripts/bench` (kept out of the library as a cargo example):
//!
//! - `fixture --out DIR [--html-bytes N]`: renders the real `newsletter` template (with
//!   `layout.html`) with featured pets added until the HTML reaches N bytes (default
//!   20,000), and writes `subject.txt`, `body.html`, `body.txt` and `data.json` to DIR.
//!   The recipient's first name and address are left as `@@FIRST@@` / `@@EMAIL@@` so the
//!   benchmark's SQL can make every row its own. Also the bring-your-own-HTML workload
//!   (`adopt_worker::bench_fixture`): `byo.json` (its `template_data`: subject and ~20 KB of
//!   generated HTML) and `templates/`, a copy of the templates directory with the
//!   `byo_html` template (`{{ body | safe }}` inside the layout) added.
//! - `latency --database-url URL --fixture DIR [--rate 50] [--secs 30] [--out FILE]`:
//!   inserts one row per tick at a fixed rate, each INSERT its own transaction, records the
//!   client-side time at which each INSERT's commit returned, waits until the running worker
//!   has sent them all, then reports `sent_at - commit time` percentiles.
//! - `pgcpu --db NAME [--pid PID]... [--interval-ms 100]`: until SIGTERM/SIGINT, samples the
//!   CPU time of the PostgreSQL backends of database NAME (found by their process title) and
//!   of the server's background processes, plus any PID given; prints the CPU seconds used
//!   while it ran.
//! - `claim-sql`: prints the claim statement exactly as the worker runs it (for EXPLAIN).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::NaiveDateTime;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        bail!("usage: bench_tool fixture|latency|pgcpu|claim-sql ...");
    };
    let opts = Opts::parse(rest)?;
    match cmd.as_str() {
        "fixture" => fixture(&opts),
        "latency" => latency(&opts).await,
        "pgcpu" => pgcpu(&opts).await,
        "claim-sql" => {
            println!("{}", adopt_worker::queue::claim_statement());
            Ok(())
        }
        other => bail!("unknown command {other:?}"),
    }
}

/// `--key value` pairs; a key may repeat.
struct Opts(Vec<(String, String)>);

impl Opts {
    fn parse(args: &[String]) -> anyhow::Result<Opts> {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let Some(key) = k.strip_prefix("--") else {
                bail!("expected --option, got {k:?}");
            };
            let v = it
                .next()
                .with_context(|| format!("--{key} needs a value"))?;
            out.push((key.to_string(), v.clone()));
        }
        Ok(Opts(out))
    }
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn need(&self, key: &str) -> anyhow::Result<&str> {
        self.get(key)
            .with_context(|| format!("--{key} is required"))
    }
    fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> anyhow::Result<T> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| anyhow::anyhow!("--{key}: not a number: {v:?}")),
        }
    }
}

// ---------------------------------------------------------------------------------------
// fixture

const PET_NAMES: &[&str] = &[
    "Pepper",
    "Luna",
    "Biscuit",
    "Milo",
    "Hazel",
    "Juniper",
    "Bramble",
    "Otis",
    "Clementine",
    "Scout",
    "Maple",
    "Winston",
    "Poppy",
    "Ziggy",
    "Nala",
    "Rufus",
    "Olive",
    "Jasper",
    "Mabel",
    "Finn",
    "Willow",
    "Toffee",
    "Pickle",
    "Bear",
];
const PETS: &[(&str, &str, &str)] = &[
    (
        "DOG",
        "Border Collie mix",
        "A clever, bouncy girl who loves fetch and would thrive with an active family.",
    ),
    (
        "CAT",
        "Domestic Shorthair",
        "Shy for the first day, then a devoted lap cat. Happiest as the only pet.",
    ),
    (
        "RABBIT",
        "Netherland Dwarf",
        "A bonded pair who binky at breakfast time and must be adopted together.",
    ),
    (
        "DOG",
        "Staffordshire Bull Terrier",
        "A gentle giant in a compact body: loves people, naps and long sniffy walks.",
    ),
    (
        "CAT",
        "Maine Coon mix",
        "Fluffy, talkative and endlessly curious; gets on well with calm dogs.",
    ),
    (
        "DOG",
        "Greyhound",
        "Retired from racing and ready for a sofa of her own. Walks nicely on a lead.",
    ),
    (
        "GUINEA_PIG",
        "American",
        "Squeaks with joy at the sound of a lettuce bag. Looking for a friend to share a hutch.",
    ),
    (
        "BIRD",
        "Cockatiel",
        "Whistles the first bars of three songs and would love a home with someone around by day.",
    ),
];
const RESCUES: &[&str] = &[
    "Riverside Animal Haven",
    "Whiskers & Friends Cat Rescue",
    "Hop Home Rabbit Rescue",
    "Happy Tails Rescue",
    "Second Chance Greyhounds",
    "Small Paws Sanctuary",
];

fn pet(i: usize) -> Value {
    let name = PET_NAMES[i % PET_NAMES.len()];
    let (kind, breed, blurb) = PETS[i % PETS.len()];
    let id = Uuid::from_u128(0x1f2e_3d4c_5b6a_4798_8a7b_6c5d_4e3f_0000 + i as u128);
    json!({
        "name": name,
        "type": kind,
        "breed": breed,
        "age": format!("{} years", 1 + i % 9),
        "rescue_name": RESCUES[i % RESCUES.len()],
        "url": format!("https://adoptdontshop.com/pets/{id}"),
        "image_url": format!("https://images.adoptdontshop.com/pets/{}-{}.jpg", name.to_lowercase(), i + 1),
        "blurb": blurb,
    })
}

/// The newsletter's data with `pets` featured pets; recipient left as placeholders.
fn newsletter_data(pets: usize) -> Value {
    json!({
        "edition": "March 2026",
        "intro": "Spring is here, and so are lots of wonderful animals hoping this is the season they find their family. Here are a few who've caught our eye this month.",
        "featured_pets": (0..pets).map(pet).collect::<Vec<_>>(),
        "success_story": {
            "title": "From kennel to couch: Biscuit's new life",
            "body": "When Biscuit arrived at Happy Tails Rescue he was nervous of everything, from doorbells to dustpans. Six weeks after moving in with Maya and her partner, he has a favourite hiking trail, a best friend at the dog park and a very firm opinion about the sofa.\n\"We couldn't imagine life without him now,\" says Maya. \"Thank you, Happy Tails, for trusting us with him.\"",
            "image_url": "https://images.adoptdontshop.com/stories/biscuit-home.jpg",
            "url": "https://adoptdontshop.com/stories/biscuits-new-life",
        },
        "tips": [
            "Spring cleaning? Many household cleaners are toxic to pets. Keep them shut away and let floors dry before paws walk on them.",
            "Lilies are highly poisonous to cats, even the pollen. Choose cat-safe flowers for Easter bouquets.",
            "Longer evenings are perfect for practising recall with a new dog: short, fun sessions with lots of rewards work best.",
        ],
        "user": { "first_name": "@@FIRST@@" },
    })
}

struct Rendered {
    subject: String,
    html: String,
    text: String,
}

fn render(dir: &Path, data: &Value) -> anyhow::Result<Rendered> {
    let read = |p: &str| {
        std::fs::read_to_string(dir.join(p)).with_context(|| format!("reading templates/{p}"))
    };
    let mut tera = tera::Tera::default();
    tera.autoescape_on(vec![".html"]);
    tera.add_raw_templates(vec![
        ("layout.html", read("layout.html")?),
        ("newsletter/body.html", read("newsletter/body.html")?),
        ("newsletter/body.txt", read("newsletter/body.txt")?),
        ("newsletter/subject.txt", read("newsletter/subject.txt")?),
    ])?;
    let mut ctx = tera::Context::from_serialize(data)?;
    ctx.insert(
        "app",
        &json!({
            "name": "Adopt Don't Shop",
            "base_url": "https://adoptdontshop.com",
            "support_email": "support@adoptdontshop.com",
        }),
    );
    ctx.insert("recipient", &json!({ "email": "@@EMAIL@@" }));
    ctx.insert("year", &2026);
    Ok(Rendered {
        subject: tera
            .render("newsletter/subject.txt", &ctx)?
            .trim()
            .to_string(),
        html: tera.render("newsletter/body.html", &ctx)?,
        text: tera.render("newsletter/body.txt", &ctx)?,
    })
}

fn fixture(opts: &Opts) -> anyhow::Result<()> {
    let out = PathBuf::from(opts.need("out")?);
    let templates = PathBuf::from(opts.get("templates").unwrap_or("templates"));
    let target: usize = opts.num("html-bytes", 20_000)?;
    let mut pets = 3;
    let (data, rendered) = loop {
        let data = newsletter_data(pets);
        let r = render(&templates, &data)?;
        if r.html.len() >= target || pets >= 200 {
            break (data, r);
        }
        pets += 1;
    };
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("subject.txt"), &rendered.subject)?;
    std::fs::write(out.join("body.html"), &rendered.html)?;
    std::fs::write(out.join("body.txt"), &rendered.text)?;
    std::fs::write(out.join("data.json"), serde_json::to_string(&data)?)?;
    let byo_html = adopt_worker::bench_fixture::byo_newsletter_html();
    let byo = json!({ "subject": adopt_worker::bench_fixture::BYO_SUBJECT, "body": byo_html });
    std::fs::write(out.join("byo.json"), serde_json::to_string(&byo)?)?;
    copy_templates(&templates, &out.join("templates"))?;
    println!(
        "fixture: newsletter with {pets} featured pets: html={} bytes text={} bytes data={} bytes",
        rendered.html.len(),
        rendered.text.len(),
        serde_json::to_string(&data)?.len()
    );
    println!(
        "fixture: bring-your-own HTML ({}): html={} bytes in template_data, {} links",
        adopt_worker::bench_fixture::BYO_TEMPLATE,
        byo_html.len(),
        byo_html.matches("<a ").count()
    );
    Ok(())
}

/// Copies the templates directory (one level of template directories) to `to`, adding the
/// bring-your-own-HTML template.
fn copy_templates(from: &Path, to: &Path) -> anyhow::Result<()> {
    use adopt_worker::bench_fixture as byo;
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .context("a directory entry without a name")?;
        if path.is_dir() {
            std::fs::create_dir_all(to.join(name))?;
            for file in std::fs::read_dir(&path)? {
                let file = file?.path();
                if file.is_file() {
                    let file_name = file.file_name().context("a file without a name")?;
                    std::fs::copy(&file, to.join(name).join(file_name))?;
                }
            }
        } else {
            std::fs::copy(&path, to.join(name))?;
        }
    }
    let dir = to.join(byo::BYO_TEMPLATE);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("template.toml"), byo::BYO_TEMPLATE_TOML)?;
    std::fs::write(dir.join("subject.txt"), byo::BYO_TEMPLATE_SUBJECT)?;
    std::fs::write(dir.join("body.html"), byo::BYO_TEMPLATE_HTML)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// latency

async fn latency(opts: &Opts) -> anyhow::Result<()> {
    let url = opts.need("database-url")?;
    let dir = PathBuf::from(opts.need("fixture")?);
    let rate: f64 = opts.num("rate", 50.0)?;
    let secs: f64 = opts.num("secs", 30.0)?;
    let warmup: usize = opts.num("warmup", 10)?;
    let html = std::fs::read_to_string(dir.join("body.html"))?;
    let text = std::fs::read_to_string(dir.join("body.txt"))?;
    let subject = std::fs::read_to_string(dir.join("subject.txt"))?;

    let options: PgConnectOptions = url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect_with(
            options
                .options([("TimeZone", "UTC")])
                .application_name("bench-latency"),
        )
        .await?;

    let insert = |i: usize| {
        let html = html
            .replace("@@FIRST@@", "Sam")
            .replace("@@EMAIL@@", &format!("latency{i}@example.org"));
        let text = text
            .replace("@@FIRST@@", "Sam")
            .replace("@@EMAIL@@", &format!("latency{i}@example.org"));
        let pool = pool.clone();
        let subject = subject.clone();
        async move {
            let mut conn = pool.acquire().await?;
            let issued = now();
            let id: Uuid = sqlx::query_scalar(
                "INSERT INTO email_queue (from_email, from_name, to_email, to_name, subject,
                     html_content, text_content, type, priority, campaign_id)
                 VALUES ('news@adoptdontshop.com', 'Adopt Don''t Shop', $1, 'Sam Adopter', $2,
                         $3, $4, 'marketing', 'normal', 'bench-latency')
                 RETURNING email_id",
            )
            .bind(format!("latency{i}@example.org"))
            .bind(subject)
            .bind(html)
            .bind(text)
            .fetch_one(&mut *conn)
            .await?;
            let committed = now();
            Ok::<_, sqlx::Error>((id, issued, committed))
        }
    };

    // Warm-up: the worker's connections (database and SMTP) come up; not measured.
    let mut warm = Vec::new();
    for i in 0..warmup {
        warm.push(insert(i).await?.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_done(&pool, &warm, Duration::from_secs(30)).await?;

    let total = (rate * secs).round() as usize;
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut handles = Vec::with_capacity(total);
    for i in 0..total {
        tick.tick().await;
        // Each insert runs on its own task so a slow one does not delay the schedule.
        handles.push(tokio::spawn(insert(warmup + i)));
    }
    let mut rows = Vec::with_capacity(total);
    for h in handles {
        rows.push(h.await??);
    }
    let insert_secs = started.elapsed().as_secs_f64();
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    wait_done(&pool, &ids, Duration::from_secs(60)).await?;

    let sent: Vec<(Uuid, Option<NaiveDateTime>, Option<NaiveDateTime>, String)> = sqlx::query_as(
        "SELECT email_id, sent_at, created_at, status::text FROM email_queue WHERE email_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&pool)
    .await?;
    let by_id: HashMap<Uuid, _> = sent.into_iter().map(|r| (r.0, (r.1, r.2, r.3))).collect();
    let mut from_commit = Vec::new();
    let mut from_issue = Vec::new();
    let mut from_created = Vec::new();
    let mut not_sent = 0;
    for (id, issued, committed) in &rows {
        match by_id.get(id) {
            Some((Some(sent_at), created, status)) if status == "sent" => {
                from_commit.push(ms(*sent_at - *committed));
                from_issue.push(ms(*sent_at - *issued));
                if let Some(c) = created {
                    from_created.push(ms(*sent_at - *c));
                }
            }
            _ => not_sent += 1,
        }
    }
    let report = format!(
        "latency: rows={total} rate_target={rate}/s rate_achieved={:.1}/s not_sent={not_sent}\n\
         latency: commit->sent_at ms {}\n\
         latency: insert_issued->sent_at ms {}\n\
         latency: created_at->sent_at ms {}\n",
        total as f64 / insert_secs,
        percentiles(&mut from_commit),
        percentiles(&mut from_issue),
        percentiles(&mut from_created),
    );
    print!("{report}");
    if let Some(out) = opts.get("out") {
        std::fs::write(out, &report)?;
    }
    Ok(())
}

fn now() -> NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

fn ms(d: chrono::TimeDelta) -> f64 {
    d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

fn percentiles(v: &mut [f64]) -> String {
    if v.is_empty() {
        return "n=0".to_string();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    format!(
        "n={} p50={:.2} p95={:.2} p99={:.2} max={:.2} min={:.2}",
        v.len(),
        p(0.50),
        p(0.95),
        p(0.99),
        v[v.len() - 1],
        v[0]
    )
}

async fn wait_done(pool: &sqlx::PgPool, ids: &[Uuid], limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let pending: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM email_queue WHERE email_id = ANY($1) AND status IN ('queued', 'sending')",
        )
        .bind(ids)
        .fetch_one(pool)
        .await?;
        if pending == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{pending} rows still not sent after {}s: is the worker running?",
                limit.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------
// pgcpu

/// utime + stime of a process, in clock ticks (USER_HZ is 100 on Linux).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name in parentheses; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Backend,
    Background,
    Watched,
}

fn classify(pid: u32, db: &str) -> Option<Kind> {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmd = String::from_utf8_lossy(&cmd);
    if !cmd.starts_with("postgres:") {
        return None;
    }
    if cmd.split_whitespace().any(|w| w == db) {
        return Some(Kind::Backend);
    }
    ["checkpointer", "background writer", "walwriter"]
        .iter()
        .any(|k| cmd.contains(k))
        .then_some(Kind::Background)
}

async fn pgcpu(opts: &Opts) -> anyhow::Result<()> {
    let db = opts.need("db")?.to_string();
    let watched: Vec<u32> = opts
        .all("pid")
        .iter()
        .map(|p| p.parse())
        .collect::<Result<_, _>>()?;
    let interval = Duration::from_millis(opts.num("interval-ms", 100)?);
    // pid -> (kind, first sample, last sample). A process first seen during the run
    // started during it, so its first sample counts from zero.
    let mut seen: HashMap<u32, (Kind, u64, u64)> = HashMap::new();
    let mut first_round = true;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let started = Instant::now();
    loop {
        let mut pids: Vec<(u32, Kind)> = watched.iter().map(|p| (*p, Kind::Watched)).collect();
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(known) = seen.get(&pid) {
                if known.0 != Kind::Watched {
                    pids.push((pid, known.0));
                }
            } else if let Some(kind) = classify(pid, &db) {
                pids.push((pid, kind));
            }
        }
        for (pid, kind) in pids {
            if let Some(t) = cpu_ticks(pid) {
                let e = seen
                    .entry(pid)
                    .or_insert((kind, if first_round { t } else { 0 }, t));
                e.2 = t;
            }
        }
        first_round = false;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let mut sums: HashMap<Kind, u64> = HashMap::new();
    for (kind, first, last) in seen.values() {
        *sums.entry(*kind).or_default() += last.saturating_sub(*first);
    }
    let s = |k| *sums.get(&k).unwrap_or(&0) as f64 / 100.0;
    let report = format!(
        "pgcpu: wall={:.2}s backends_cpu={:.2}s background_cpu={:.2}s watched_cpu={:.2}s\n",
        started.elapsed().as_secs_f64(),
        s(Kind::Backend),
        s(Kind::Background),
        s(Kind::Watched),
    );
    print!("{report}");
    if let Some(out) = opts.get("out") {
        std::fs::write(out, &report)?;
    }
    Ok(())
}
