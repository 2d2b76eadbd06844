//! Kernel network faults as netem qdiscs on both ends of the node's link,
//! where the kernel has sch_netem: each end impairs the packets leaving
//! through it, so each direction gets the fault once. Netem is tried
//! first; its typed "unsupported" answer hands the fault to the fallback
//! (the delay line, or nftables `dup` for duplication).

use netns::qdisc::{self, QdiscError};

use super::delay::DelayLine;
use super::duplicate::NftDup;
use super::{check, ChangeError, Commands, Executor, Target};
use crate::api::fault::{Backend, JitterDist, Undo};
use crate::faults::fault::{flag_name, Fault};
use crate::faults::impairment::Gilbert;

/// `fault` (on all the node's traffic) by netem.
pub struct Netem {
    pub fault: Fault,
}

impl Executor for Netem {
    fn backend(&self) -> Backend {
        Backend::Netem
    }

    fn undo(&self, target: &Target) -> anyhow::Result<Vec<Undo>> {
        target.clear_links()
    }

    fn apply(&self, target: &Target) -> Result<Commands, ChangeError> {
        let options = options(&self.fault)?;
        let mut commands = Vec::new();
        for (namespace, device) in target.links()? {
            match qdisc::netem_options(&namespace, &device, &options) {
                Ok(applied) => commands.extend(applied.commands),
                // Only a refusal of the first link leaves nothing changed.
                Err(source @ QdiscError::Unsupported { .. }) if commands.is_empty() => {
                    return Err(ChangeError::Unsupported { backend: Backend::Netem, source })
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(commands)
    }

    fn verify(&self, target: &Target) -> anyhow::Result<String> {
        check::verify(target, &self.fault)
    }

    /// The fallback is checked first: the delay line's check is a file
    /// read, netem's a throwaway namespace.
    fn available(&self, target: &Target) -> Result<(), String> {
        let fallback = self.fallback().map_or(Ok(()), |fallback| fallback.available(target));
        match (fallback, qdisc::probe_netem()) {
            (Ok(()), _) | (_, qdisc::Support::Supported) => Ok(()),
            (Err(line), qdisc::Support::Unsupported { reason }) => Err(format!("neither netem ({reason}) nor {line}")),
        }
    }

    fn fallback(&self) -> Option<Box<dyn Executor>> {
        Some(match self.fault {
            Fault::Duplicate { pct, port } => Box::new(NftDup { pct, port }),
            _ => Box::new(DelayLine { fault: self.fault.clone() }),
        })
    }
}

/// netem's option words for one end of the link: half of a round-trip
/// delay and of its variance, the whole of each share.
fn options(fault: &Fault) -> anyhow::Result<Vec<String>> {
    let words: Vec<String> = match *fault {
        Fault::Slow { slow_ms, jitter, .. } => {
            let mut words = vec!["delay".into(), micros(slow_ms as f64 / 2.0)];
            if let Some(jitter) = jitter {
                // Two independent ends: each σ/√2 makes a round trip's σ.
                words.push(micros(jitter.ms as f64 / 2f64.sqrt()));
                words.extend(["distribution".into(), distribution(jitter.dist)]);
            }
            words
        }
        Fault::Loss { pct, correlation_pct: Some(correlation), .. } => {
            let gilbert = Gilbert::new(f64::from(pct) / 100.0, f64::from(correlation) / 100.0);
            vec!["loss".into(), "gemodel".into(), percent(gilbert.p), percent(gilbert.r)]
        }
        Fault::Duplicate { pct, .. } => vec!["duplicate".into(), format!("{pct}%")],
        Fault::Reorder { pct, slow_ms, .. } => {
            vec!["delay".into(), micros(slow_ms as f64 / 2.0), "reorder".into(), format!("{pct}%")]
        }
        Fault::Corrupt { pct, .. } => vec!["corrupt".into(), format!("{pct}%")],
        _ => anyhow::bail!("{:?} is not made by netem", fault.kind()),
    };
    Ok(words)
}

fn micros(ms: f64) -> String {
    format!("{}us", (ms * 1000.0).round() as u64)
}

fn percent(share: f64) -> String {
    format!("{:.4}%", share * 100.0)
}

/// The name of netem's table (iproute2 ships `normal.dist` and `pareto.dist`).
fn distribution(dist: JitterDist) -> String {
    flag_name(&dist)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fault::PortSelector;
    use crate::faults::fault::Jitter;

    #[test]
    fn each_end_gets_half_the_delay_and_half_the_variance() {
        let jitter = Some(Jitter { ms: 20, dist: JitterDist::Pareto });
        let slow = Fault::Slow { slow_ms: 50, jitter, port: PortSelector::All };
        assert_eq!(options(&slow).unwrap(), ["delay", "25000us", "14142us", "distribution", "pareto"]);
        let loss = Fault::Loss { pct: 20, correlation_pct: Some(60), port: PortSelector::All };
        assert_eq!(options(&loss).unwrap(), ["loss", "gemodel", "10.0000%", "40.0000%"]);
    }
}
