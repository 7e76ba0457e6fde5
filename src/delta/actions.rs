//! The actions of a Delta commit, one JSON object per line (`{"add": {...}}`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Partition column → value (`None`: a null partition value).
pub type PartitionValues = BTreeMap<String, Option<String>>;

/// The protocol versions a table needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Protocol {
    /// Oldest reader protocol that can read the table.
    pub min_reader_version: i32,
    /// Oldest writer protocol that can write it.
    pub min_writer_version: i32,
    /// Reader table features (reader version 3 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader_features: Option<Vec<String>>,
    /// Writer table features (writer version 7 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer_features: Option<Vec<String>>,
}

/// The data files' format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Format {
    /// Always `parquet`.
    pub provider: String,
    /// Format options (none).
    #[serde(default)]
    pub options: BTreeMap<String, Option<String>>,
}

/// The table's metadata: identity, schema, partition columns, properties.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// A unique id for the table.
    pub id: String,
    /// A name for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A description for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The data files' format.
    pub format: Format,
    /// The schema, in Spark's JSON representation.
    pub schema_string: String,
    /// Names of the partition columns, in folder order.
    pub partition_columns: Vec<String>,
    /// Table properties.
    #[serde(default)]
    pub configuration: BTreeMap<String, Option<String>>,
    /// When the table was created (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time: Option<i64>,
}

/// A data file joining the table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Add {
    /// Path relative to the table root, as a URI (see [`super::path_to_uri`]).
    pub path: String,
    /// The file's partition values.
    pub partition_values: PartitionValues,
    /// Bytes.
    pub size: i64,
    /// When the file was written (ms since the epoch).
    pub modification_time: i64,
    /// False when the file only rearranges rows already in the table (compaction).
    pub data_change: bool,
    /// Statistics as a JSON string (`numRecords`, `minValues`, `maxValues`, `nullCount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<String>,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, Option<String>>>,
    /// Deletion vectors are a reader feature quiver neither writes nor reads.
    #[serde(default, skip_serializing)]
    pub deletion_vector: Option<serde_json::Value>,
}

/// A data file leaving the table (kept as a tombstone until vacuumed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Remove {
    /// Path relative to the table root, as a URI.
    pub path: String,
    /// When it was removed (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<i64>,
    /// False when its rows are in files added by the same commit (compaction).
    pub data_change: bool,
    /// True when `partition_values` and `size` are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_file_metadata: Option<bool>,
    /// The file's partition values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_values: Option<PartitionValues>,
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
}

/// An application's transaction marker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Txn {
    /// The application.
    pub app_id: String,
    /// Its version.
    pub version: i64,
    /// When it was set (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<i64>,
}

/// One line of a commit.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Provenance: who committed, when, and (for quiver) the change-feed position.
    CommitInfo(serde_json::Map<String, serde_json::Value>),
    /// Protocol versions.
    Protocol(Protocol),
    /// Table metadata.
    #[serde(rename = "metaData")]
    Metadata(Metadata),
    /// A file joins.
    Add(Add),
    /// A file leaves.
    Remove(Remove),
    /// An application's marker.
    Txn(Txn),
}

/// A commit line as read: every action quiver knows, anything else ignored (`cdc` and
/// `domainMetadata` do not change what a reader of `market_data` sees).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    #[serde(default)]
    commit_info: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    protocol: Option<Protocol>,
    #[serde(default, rename = "metaData")]
    metadata: Option<Metadata>,
    #[serde(default)]
    add: Option<Add>,
    #[serde(default)]
    remove: Option<Remove>,
    #[serde(default)]
    txn: Option<Txn>,
}

impl Action {
    /// Parses the lines of a commit file named `path`.
    pub fn parse_commit(path: &str, text: &[u8]) -> Result<Vec<Action>> {
        let mut out = Vec::new();
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed: Line = serde_json::from_slice(line).map_err(|e| Error::DeltaLog {
                path: format!("{path}:{}", i + 1),
                message: format!("not a Delta action: {e}"),
            })?;
            if let Some(a) = parsed.add {
                if a.deletion_vector.is_some() {
                    return Err(Error::DeltaLog {
                        path: format!("{path}:{}", i + 1),
                        message: "deletion vectors are not supported".into(),
                    });
                }
                out.push(Action::Add(a));
            }
            out.extend(parsed.commit_info.map(Action::CommitInfo));
            out.extend(parsed.protocol.map(Action::Protocol));
            out.extend(parsed.metadata.map(Action::Metadata));
            out.extend(parsed.remove.map(Action::Remove));
            out.extend(parsed.txn.map(Action::Txn));
        }
        Ok(out)
    }

    /// The commit file's text: one action per line.
    pub fn serialize_commit(actions: &[Action]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(256 * actions.len());
        for a in actions {
            serde_json::to_writer(&mut out, a)
                .map_err(|e| Error::internal(format!("a Delta action does not serialize: {e}")))?;
            out.push(b'\n');
        }
        Ok(out)
    }
}

impl Protocol {
    /// Fails unless quiver can read a table with this protocol.
    pub fn check_readable(&self, path: &str) -> Result<()> {
        let features = self.reader_features.as_deref().unwrap_or_default();
        if self.min_reader_version > 3 || (self.min_reader_version == 3 && !features.is_empty()) {
            return Err(Error::DeltaLog {
                path: path.into(),
                message: format!(
                    "the table needs reader version {} with features {features:?}; quiver reads \
                     version {} tables",
                    self.min_reader_version,
                    super::READER_VERSION
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_round_trip_and_ignore_unknown_actions() {
        let add = Add {
            path: "a=1/f.parquet".into(),
            partition_values: [("a".to_string(), Some("1".to_string()))].into(),
            size: 10,
            modification_time: 5,
            data_change: true,
            stats: Some("{\"numRecords\":3}".into()),
            tags: None,
            deletion_vector: None,
        };
        let actions = vec![
            Action::Protocol(Protocol {
                min_reader_version: 1,
                min_writer_version: 2,
                reader_features: None,
                writer_features: None,
            }),
            Action::Add(add.clone()),
        ];
        let mut text = Action::serialize_commit(&actions).unwrap();
        assert!(text.starts_with(b"{\"protocol\":{\"minReaderVersion\":1"));
        text.extend_from_slice(b"{\"domainMetadata\":{\"domain\":\"x\"}}\n");
        let back = Action::parse_commit("x.json", &text).unwrap();
        assert_eq!(back, actions);
        let torn = Action::parse_commit("x.json", b"{\"add\":{\"path\"").unwrap_err();
        assert!(torn.to_string().starts_with("x.json:1: "), "{torn}");
    }
}
