//! Micro-benchmark of the render path for the bring-your-own-HTML workload (issue 13): the
//! `byo_html` template (`{{ body | safe }}` in the layout) with the generated ~20 KB newsletter
//! of `adopt_worker::bench_fixture`, rendered as a send renders it, without a database.
//!
//!   cargo run --release --example render_bench -- [full|untracked|text|css|track] [N]
//!
//! - `full` (default): render (Tera, CSS inlining, text part) + tracking, as the worker does;
//! - `untracked`: the same without tracking (tracking is off in `scripts/bench`);
//! - `text`: only the text part, from the rendered HTML;
//! - `css`: only CSS inlining of the HTML Tera produced;
//! - `track`: only tracking (click links and open pixel) of the rendered HTML.
//!
//! Prints the CPU time per email. For instruction counts, which are stable on a shared
//! machine, run it under callgrind counting only the measured loop:
//!
//!   valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured*' \
//!       target/release/examples/render_bench full 200
//!
//! and divide the `Collected` total by N.

use std::time::Instant;

use adopt_worker::bench_fixture as byo;
use adopt_worker::templates::{Standalone, inline_css};
use adopt_worker::tracking::{RedirectHosts, Tracker};
use serde_json::{Map, Value, json};
use uuid::Uuid;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().map_or("full", String::as_str).to_string();
    let n: usize = match args.get(1) {
        Some(v) => v.parse()?,
        None => 1000,
    };
    let t = Standalone::new(
        byo::BYO_TEMPLATE_SUBJECT,
        byo::BYO_TEMPLATE_HTML,
        None,
        json!([
            {"name": "subject", "type": "string", "required": true},
            {"name": "body", "type": "string", "required": true},
        ]),
    )
    .map_err(anyhow::Error::msg)?;
    let mut data = Map::new();
    data.insert("subject".into(), Value::from(byo::BYO_SUBJECT));
    data.insert("body".into(), Value::from(byo::byo_newsletter_html()));
    let unsubscribe = "https://api.adoptdontshop.com/u/t0k3n";
    let tracker = Tracker::new(b"0123456789abcdef", "https://t.adoptdontshop.com", vec![])
        .with_redirect_hosts(RedirectHosts::new(&[
            "adoptdontshop.com",
            "*.adoptdontshop.com",
        ]));
    let parts = t
        .render(&data, "maya@example.com", unsubscribe)
        .map_err(anyhow::Error::msg)?;
    // The HTML as Tera makes it, before inlining: the layout around the body.
    let raw = t
        .tera_html(&data, "maya@example.com", unsubscribe)
        .map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let cpu0 = thread_cpu();
    let sink = measured(
        &what,
        n,
        &t,
        &data,
        unsubscribe,
        &tracker,
        &parts.html,
        &raw,
    )?;
    let per = match (cpu0, thread_cpu()) {
        (Some(a), Some(b)) => (b - a) / n as u32,
        _ => started.elapsed() / n as u32,
    };
    println!(
        "{what}: {per:?} CPU per email over {n} (html {} bytes inlined, {} before; text {} bytes; {sink})",
        parts.html.len(),
        raw.len(),
        parts.text.len()
    );
    Ok(())
}

#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn measured(
    what: &str,
    n: usize,
    t: &Standalone,
    data: &Map<String, Value>,
    unsubscribe: &str,
    tracker: &Tracker,
    html: &str,
    raw: &str,
) -> anyhow::Result<usize> {
    let mut sink = 0;
    for i in 0..n {
        let id = Uuid::from_u128(i as u128);
        sink += match what {
            "full" => {
                let p = t
                    .render_tracked(data, "maya@example.com", unsubscribe, tracker, id)
                    .map_err(anyhow::Error::msg)?;
                p.html.len() + p.text.len()
            }
            "untracked" => {
                let p = t
                    .render(data, "maya@example.com", unsubscribe)
                    .map_err(anyhow::Error::msg)?;
                p.html.len() + p.text.len()
            }
            "text" => adopt_worker::delivery::message::html_to_text(html).len(),
            "css" => inline_css(raw).map_err(anyhow::Error::msg)?.len(),
            "track" => tracker.inject(id, html, Some(unsubscribe)).len(),
            other => {
                anyhow::bail!("unknown measurement {other:?}: full, untracked, text, css or track")
            }
        };
    }
    Ok(sink)
}

/// On-CPU time of this thread (Linux), so a busy machine does not inflate it.
fn thread_cpu() -> Option<std::time::Duration> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(std::time::Duration::from_nanos)
}
