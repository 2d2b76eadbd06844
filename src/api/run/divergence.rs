//! `divergence_<stamp>.csv` and the summary's `divergence`: how far the
//! replicas drifted apart during a run and how fast they came back together.
//!
//! The driver samples the nodes' Merkle roots and counters through the
//! admin API (nothing is repaired by looking) from t0 until the repair
//! rounds end; the report plots the samples beside the fault windows.

use serde::{Deserialize, Serialize};

/// One sample: a row of `divergence_<stamp>.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DivergenceSample {
    /// µs since t0 (the start of warmup), when the sample's answers were in.
    pub t_us: i64,
    /// Partitions whose live preference-list replicas (two or more that
    /// answered) hold different Merkle roots and, asked a moment later,
    /// still different leaves (when every one answered that too): a write
    /// on its way to the replicas, caught by one look, does not count.
    pub divergent_partitions: u64,
    /// Merkle leaves of the divergent partitions on which the live
    /// replicas differ: a lower bound on the keys that differ (a leaf
    /// covers every key hashed into it; with a few keys per partition and
    /// 256 leaves, nearly always one key). Empty when not counted.
    pub divergent_keys: Option<u64>,
    /// Hints the answering nodes hold, summed.
    pub hints_pending: u64,
    /// The answering nodes' `read_repairs` counters, summed (cumulative
    /// since each node started).
    pub read_repairs: u64,
    /// The answering nodes' `ae_keys_received` counters, summed: keys
    /// received by background anti-entropy (the driver's counted repair
    /// rounds report theirs in the summary's `repair.rounds`).
    pub ae_repairs: u64,
}

/// The summary's `divergence`: the peak, the count at the heal and at the
/// end of the workload, and how long after the heal it first reached zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DivergenceSummary {
    /// Samples taken.
    pub samples: usize,
    /// The most divergent partitions of any sample.
    pub peak_partitions: u64,
    /// µs since t0 of the first sample at the peak; `null` without samples.
    pub peak_at_us: Option<i64>,
    /// Divergent partitions at the sample nearest the start of the last
    /// heal; `null` for a run without a heal.
    pub at_heal: Option<u64>,
    /// At the sample nearest the end of the workload.
    pub at_workload_end: Option<u64>,
    /// ms from the start of the last heal to the first sample after it with
    /// no divergent partition; `null` if none was, or nothing was healed.
    pub heal_to_zero_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_reads_back_from_csv_with_an_empty_key_count() {
        let text = "t_us,divergent_partitions,divergent_keys,hints_pending,read_repairs,ae_repairs\n-5,3,,7,1,0\n";
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let samples: Vec<DivergenceSample> = reader.deserialize().collect::<Result<_, _>>().unwrap();
        assert_eq!(samples[0].t_us, -5);
        assert_eq!((samples[0].divergent_partitions, samples[0].divergent_keys), (3, None));
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.serialize(&samples[0]).unwrap();
        assert_eq!(String::from_utf8(writer.into_inner().unwrap()).unwrap(), text);
    }
}
