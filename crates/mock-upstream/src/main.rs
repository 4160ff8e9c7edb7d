//! `mock-upstream` binary: serves the mock on a TCP port.

use std::io::Write;

use clap::Parser;
use mock_upstream::{MockConfig, MockState};

/// A fake OpenAI + Anthropic upstream with a ledger of what it served.
#[derive(Parser, Debug)]
#[command(name = "mock-upstream", version)]
struct Args {
    /// Port to listen on (0 = pick a free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Delay before the response headers, in ms.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Delay between SSE events, in ms.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Output tokens (= generated words) per response.
    #[arg(long, alias = "output-tokens", default_value_t = 16)]
    chunks: u64,
    /// Cached input tokens to report.
    #[arg(long, default_value_t = 0)]
    cached_tokens: u64,
    /// Reasoning tokens to report (OpenAI chat).
    #[arg(long, default_value_t = 0)]
    reasoning_tokens: u64,
    /// Never report usage.
    #[arg(long)]
    omit_usage: bool,
    /// Abort streams after N SSE events.
    #[arg(long)]
    cut_at_chunk: Option<u64>,
    /// Answer every request with this HTTP status and an error body.
    #[arg(long)]
    error_status: Option<u16>,
    /// Never answer.
    #[arg(long)]
    hang: bool,
    /// Do not keep a ledger (long benchmarks).
    #[arg(long)]
    no_ledger: bool,
    /// Report this many input tokens in the usage, whatever the input.
    #[arg(long)]
    report_input_tokens: Option<u64>,
    /// Report this many output tokens in the usage, whatever was generated.
    #[arg(long)]
    report_output_tokens: Option<u64>,
    /// Generate the full output even past the request's max_tokens.
    #[arg(long)]
    ignore_max_tokens: bool,
    /// Add a "padding" field of N bytes to non-streamed JSON responses.
    #[arg(long, default_value_t = 0)]
    pad_bytes: u64,
    /// Stream `data: ` + N bytes without any event boundary instead of events.
    #[arg(long, default_value_t = 0)]
    sse_no_boundary_bytes: u64,
    /// Send response bodies one byte at a time, N ms apart.
    #[arg(long, default_value_t = 0)]
    trickle_ms: u64,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = MockConfig {
        latency_ms: args.latency_ms,
        chunk_delay_ms: args.chunk_delay_ms,
        output_tokens: args.chunks,
        cached_tokens: args.cached_tokens,
        reasoning_tokens: args.reasoning_tokens,
        omit_usage: args.omit_usage,
        cut_at_chunk: args.cut_at_chunk,
        error_status: args.error_status,
        hang: args.hang,
        record_ledger: !args.no_ledger,
        report_input_tokens: args.report_input_tokens,
        report_output_tokens: args.report_output_tokens,
        ignore_max_tokens: args.ignore_max_tokens,
        pad_bytes: args.pad_bytes,
        sse_no_boundary_bytes: args.sse_no_boundary_bytes,
        trickle_ms: args.trickle_ms,
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = args.threads {
        runtime.worker_threads(n.max(1));
    }
    runtime.build()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
        let addr = listener.local_addr()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "mock-upstream listening on http://{addr}")?;
            out.flush()?;
        }
        mock_upstream::serve(listener, MockState::new(config)).await?;
        Ok(())
    })
}
