//! Logging and tracing: `tracing` everywhere, exported by OpenTelemetry (OTLP over HTTP) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set. The W3C trace-context propagator is always installed,
//! so trace context rides in NATS headers whether or not spans are exported.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

/// Keeps the tracer provider alive; flushes spans when dropped.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // Nothing useful can be done about a failed flush at exit.
        let _ = self.provider.shutdown();
    }
}

/// The tracer provider Relais runs with, before an exporter is added. Unless
/// `OTEL_TRACES_SAMPLER` chooses a sampler, Relais records its own spans whatever a caller's
/// `traceparent` says of sampling: a caller continues its trace through Relais, but does not
/// switch Relais' tracing off.
pub fn tracer_provider(service: &'static str) -> opentelemetry_sdk::trace::TracerProviderBuilder {
    let builder = SdkTracerProvider::builder()
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service).build());
    if std::env::var_os("OTEL_TRACES_SAMPLER").is_some() {
        return builder;
    }
    builder.with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
}

/// Installs the global subscriber: logs to stderr (stdout belongs to command output, such as
/// a token), filtered by `RUST_LOG` (default `default_filter`), and OpenTelemetry spans.
pub fn init(service: &'static str, default_filter: &str) -> TelemetryGuard {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let mut builder = tracer_provider(service);
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => eprintln!("OpenTelemetry export disabled: {e}"),
        }
    }
    let provider = builder.build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Spans reach OpenTelemetry at info level whatever the log filter, so that trace context
    // is propagated even when logs are quiet.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    // Colours only on a terminal (and never with NO_COLOR): journald and log files get
    // plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false)
        .with_filter(filter);
    // A second init (tests) keeps the first subscriber.
    let _ = Registry::default().with(fmt).with(otel).try_init();
    TelemetryGuard { provider }
}
