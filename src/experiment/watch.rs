//! Watching the failure detector during a run: every node's view of who is
//! alive, polled ten times a second from the client side, so the report can
//! say how long the cluster took to notice a fault and to trust the node
//! again after the heal — the part of the story clients do not see.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cluster::ClusterView;
use super::polling::Polling;
use crate::api::run::Detection;
use crate::api::run::EventLog;

const EVERY: Duration = Duration::from_millis(100);

/// What one node said at one time: the members it believed down.
#[derive(Debug, Clone)]
pub struct Sighting {
    pub t_us: i64,
    pub observer: String,
    pub down: Vec<String>,
}

/// Every node's view of who is down, polled from t0 on.
pub struct Watch(Polling<Sighting>);

impl Watch {
    pub fn start(cluster: Arc<ClusterView>, t0: Instant) -> Watch {
        Watch(Polling::start(cluster, move |view, stop| poll(view, t0, stop)))
    }

    /// What was seen; a watch that failed saw nothing to report.
    pub fn finish(self) -> Vec<Sighting> {
        self.0.finish().ok().and_then(Result::ok).unwrap_or_default()
    }
}

async fn poll(cluster: Arc<ClusterView>, t0: Instant, stop: Arc<AtomicBool>) -> anyhow::Result<Vec<Sighting>> {
    let mut sightings = Vec::new();
    let mut clients: Vec<_> = (0..cluster.ids.len()).map(|i| cluster.admin(i).with_timeout(EVERY * 5)).collect();
    let mut tick = tokio::time::interval(EVERY);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let answers = futures::future::join_all(clients.iter_mut().map(|c| c.status())).await;
        let t_us = t0.elapsed().as_micros() as i64;
        for (id, answer) in cluster.ids.iter().zip(answers) {
            let Ok(status) = answer else { continue };
            let down = status.down().map(str::to_owned).collect();
            sightings.push(Sighting { t_us, observer: id.clone(), down });
        }
    }
    Ok(sightings)
}

pub fn detections(events: &[EventLog], sightings: &[Sighting]) -> Vec<Detection> {
    events
        .iter()
        .filter_map(|event| {
            let target = event.targets.first()?.clone();
            let applied = event.applied_us?;
            let observers: Vec<&str> = {
                let mut ids: Vec<&str> =
                    sightings.iter().map(|s| s.observer.as_str()).filter(|o| *o != target).collect();
                ids.sort_unstable();
                ids.dedup();
                ids
            };
            let first_time = |observer: &str, from: i64, seen_down: bool| {
                sightings
                    .iter()
                    .find(|s| s.observer == observer && s.t_us >= from && s.down.contains(&target) == seen_down)
                    .map(|s| (s.t_us - from) as f64 / 1000.0)
            };
            let noticed: Vec<Option<f64>> = observers.iter().map(|o| first_time(o, applied, true)).collect();
            let noticed_by_any = noticed.iter().any(Option::is_some);
            let alive_again: Option<Vec<f64>> = event
                .healed_us
                .filter(|_| noticed_by_any)
                .and_then(|healed| observers.iter().map(|o| first_time(o, healed, false)).collect());
            Some(Detection {
                event: event.event,
                first_noticed_ms: noticed.iter().flatten().copied().reduce(f64::min),
                all_noticed_ms: noticed
                    .iter()
                    .copied()
                    .collect::<Option<Vec<f64>>>()
                    .and_then(|v| v.into_iter().reduce(f64::max)),
                all_alive_after_heal_ms: alive_again.and_then(|v| v.into_iter().reduce(f64::max)),
                target,
            })
        })
        .collect()
}

/// `membership_<stamp>.csv`: every sighting, for plots of the detector.
pub fn write_csv(path: &std::path::Path, sightings: &[Sighting]) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_path(path)?;
    writer.write_record(["t_us", "observer", "down"])?;
    for s in sightings {
        writer.write_record([s.t_us.to_string(), s.observer.clone(), s.down.join(" ")])?;
    }
    Ok(writer.flush()?)
}
