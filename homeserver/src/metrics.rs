//! Prometheus metrics: what operators graph and alert on.

use crate::protocol::RequestType;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric the homeserver exports; cheap to clone (the metrics are shared handles).
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Authenticated WebSocket connections.
    pub ws_connections: IntGauge,
    /// Rooms with live state in this process.
    pub live_rooms: IntGauge,
    /// Events committed to room logs.
    pub events_persisted: IntCounter,
    /// Signaling messages relayed.
    pub signals_relayed: IntCounter,
    /// WebSocket messages received, by type.
    pub ws_messages: IntCounterVec,
    /// `ws_messages`' counter of each request type, then of unknown types: looked up once, as
    /// a label lookup per message (a hash and a lock) is a cost the relay path does not need.
    ws_message_counters: Vec<IntCounter>,
    /// Errors answered, by code.
    pub errors: IntCounterVec,
    /// HTTP request latency, by route pattern, method and status.
    pub http_latency: HistogramVec,
    /// Event writer batch sizes.
    pub write_batch: prometheus::Histogram,
    /// Rooms deleted by the idle sweeper.
    pub rooms_expired: IntCounter,
    /// Completed runs of the idle sweeper.
    pub room_sweeps: IntCounter,
    /// Guest sessions deleted after `sessions.idle_ttl` unused.
    pub sessions_expired: IntCounter,
    /// Other servers' requests refused and EDUs dropped as over their budgets, by kind.
    pub remote_over_budget: IntCounterVec,
    /// Sockets placed on each HTTP worker thread (see `crate::ws::placement`), by its index.
    pub ws_sockets_by_worker: prometheus::IntGaugeVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("confab".into()), None).unwrap_or_else(|_| Registry::new());
        // Metric definitions are static and valid, so construction cannot fail; a failed
        // registration (impossible with unique names) would only hide the metric.
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric());
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).unwrap_or_else(|_| unreachable_metric());
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|_| unreachable_metric());
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let http_latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency"),
            &["method", "route", "status"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        let _ = registry.register(Box::new(http_latency.clone()));
        let write_batch = prometheus::Histogram::with_opts(
            HistogramOpts::new("event_write_batch_size", "Events committed per transaction")
                .buckets(vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
                ]),
        )
        .unwrap_or_else(|_| unreachable_metric());
        let _ = registry.register(Box::new(write_batch.clone()));
        let ws_sockets_by_worker = prometheus::IntGaugeVec::new(
            Opts::new(
                "ws_sockets_by_worker",
                "Open WebSockets placed on each HTTP worker thread, by the worker's index",
            ),
            &["worker"],
        )
        .unwrap_or_else(|_| unreachable_metric());
        let _ = registry.register(Box::new(ws_sockets_by_worker.clone()));
        let ws_messages = counter_vec(
            "ws_messages_total",
            "WebSocket messages received, by type",
            &["type"],
        );
        Self {
            ws_connections: gauge("ws_connections", "Authenticated WebSocket connections"),
            live_rooms: gauge("live_rooms", "Rooms with live state in this process"),
            events_persisted: counter("events_persisted_total", "Events committed"),
            signals_relayed: counter("signals_relayed_total", "Signaling messages relayed"),
            rooms_expired: counter("rooms_expired_total", "Rooms deleted after idling"),
            room_sweeps: counter("room_sweeps_total", "Completed runs of the idle sweeper"),
            sessions_expired: counter(
                "sessions_expired_total",
                "Guest sessions deleted after sessions.idle_ttl unused",
            ),
            ws_message_counters: RequestType::ALL
                .iter()
                .map(|t| t.as_str())
                .chain(["unknown"])
                .map(|label| ws_messages.with_label_values(&[label]))
                .collect(),
            ws_messages,
            errors: counter_vec("errors_total", "Errors answered, by code", &["code"]),
            remote_over_budget: counter_vec(
                "federation_over_budget_total",
                "Other servers' requests refused and EDUs dropped as over budget, by kind",
                &["kind"],
            ),
            http_latency,
            write_batch,
            ws_sockets_by_worker,
            registry,
        }
    }

    /// Counts a WebSocket message of a request type (`None`: an unknown one).
    pub fn count_ws_message(&self, kind: Option<RequestType>) {
        let i = kind.map_or(RequestType::ALL.len(), |k| {
            RequestType::ALL.iter().position(|t| *t == k).unwrap_or(0)
        });
        if let Some(counter) = self.ws_message_counters.get(i) {
            counter.inc();
        }
    }

    /// Counts an error answered to a client.
    pub fn count_error(&self, code: crate::error::ErrorCode) {
        self.errors.with_label_values(&[code.as_str()]).inc();
    }

    /// Exports a metric kept by a part that exists before the server's state does (the
    /// embedded Postgres supervisor's restart counter); a name already taken is ignored.
    pub fn register(&self, metric: IntCounter) {
        let _ = self.registry.register(Box::new(metric));
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn unreachable_metric<T>() -> T {
    // Only reachable with an invalid static metric name, which the tests would catch at once.
    panic!("invalid metric definition")
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders() {
        let m = super::Metrics::new();
        m.errors.with_label_values(&["room_full"]).inc();
        m.events_persisted.inc();
        let text = m.render();
        assert!(text.contains("confab_errors_total{code=\"room_full\"} 1"));
        assert!(text.contains("confab_events_persisted_total 1"));
    }
}
