//! The server's system metric samples: the names it samples ([`MetricName`],
//! OpenTelemetry's semantic-convention names where there is one), a
//! sample, and the bucketed series a query returns.

use super::NANOS_PER_SEC;
use crate::DomainError;

/// A system metric the server samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetricName {
    /// The process's CPU time over wall time, divided by the CPUs (0–1).
    ProcessCpu,
    /// The process's resident memory, bytes.
    ProcessMemory,
    /// The host's busy CPU time over all CPU time (0–1).
    SystemCpu,
    /// The host's memory in use, bytes.
    SystemMemoryUsage,
    /// The host's memory, bytes.
    SystemMemoryLimit,
    /// Bytes of the files under the data directory.
    DataDir,
    /// The database's size, bytes.
    DatabaseSize,
    /// Open HTTP connections.
    Connections,
    /// Messages waiting for their embedding.
    EmbeddingQueue,
    /// Entries in the vector index.
    VectorIndex,
}

impl MetricName {
    /// Every name, in the order series are listed.
    pub const ALL: [Self; 10] = [
        Self::DataDir,
        Self::DatabaseSize,
        Self::EmbeddingQueue,
        Self::VectorIndex,
        Self::Connections,
        Self::ProcessCpu,
        Self::ProcessMemory,
        Self::SystemCpu,
        Self::SystemMemoryLimit,
        Self::SystemMemoryUsage,
    ];

    /// Its name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProcessCpu => "process.cpu.utilization",
            Self::ProcessMemory => "process.memory.usage",
            Self::SystemCpu => "system.cpu.utilization",
            Self::SystemMemoryUsage => "system.memory.usage",
            Self::SystemMemoryLimit => "system.memory.limit",
            Self::DataDir => "memlayer.data_dir.usage",
            Self::DatabaseSize => "memlayer.database.size",
            Self::Connections => "memlayer.server.connections",
            Self::EmbeddingQueue => "memlayer.embedding.queue",
            Self::VectorIndex => "memlayer.index.vector.entries",
        }
    }

    /// Its unit (UCUM, as OpenTelemetry writes them).
    #[must_use]
    pub fn unit(self) -> &'static str {
        match self {
            Self::ProcessCpu | Self::SystemCpu => "1",
            Self::ProcessMemory
            | Self::SystemMemoryUsage
            | Self::SystemMemoryLimit
            | Self::DataDir
            | Self::DatabaseSize => "By",
            Self::Connections => "{connection}",
            Self::EmbeddingQueue => "{job}",
            Self::VectorIndex => "{vector}",
        }
    }

    /// Parses [`MetricName::as_str`].
    ///
    /// # Errors
    /// A [`DomainError`] on `name` listing the names.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        Self::ALL.into_iter().find(|n| n.as_str() == s).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|n| n.as_str()).collect();
            DomainError::new("name", format!("unknown metric; known: {}", known.join(", ")))
        })
    }
}

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSample {
    /// What.
    pub name: MetricName,
    /// Which server.
    pub instance: String,
    /// When (ns since the epoch).
    pub at_ns: i64,
    /// The value.
    pub value: f64,
}

/// A query of samples: names (empty: all), range, bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricQuery {
    /// The names; empty for every name.
    pub names: Vec<MetricName>,
    /// From (ns, inclusive).
    pub from_ns: i64,
    /// To (ns, exclusive).
    pub to_ns: i64,
    /// Bucket width (ns).
    pub bucket_ns: i64,
}

/// Smallest metric bucket, seconds.
pub const MIN_METRIC_BUCKET_SECS: i64 = 1;
/// Largest metric bucket, seconds.
pub const MAX_METRIC_BUCKET_SECS: i64 = 86_400;

impl MetricQuery {
    /// Bucket width in seconds.
    #[must_use]
    pub fn bucket_secs(&self) -> i64 {
        self.bucket_ns / NANOS_PER_SEC
    }
}

/// One bucket of samples.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    /// Its start (ns).
    pub start_ns: i64,
    /// Mean of its samples.
    pub avg: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Samples in it.
    pub samples: i64,
}

/// The buckets of one name on one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSeries {
    /// What.
    pub name: MetricName,
    /// Which server.
    pub instance: String,
    /// Buckets with samples, oldest first.
    pub points: Vec<MetricPoint>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for n in MetricName::ALL {
            assert_eq!(MetricName::parse(n.as_str()).unwrap(), n);
            assert!(seen.insert(n.as_str()));
            assert!(!n.unit().is_empty());
        }
        let e = MetricName::parse("cpu").unwrap_err();
        assert!(e.reason.contains("process.cpu.utilization"), "{e}");
    }
}
