//! The objects that run the store and the driver in a cluster: a namespace,
//! a headless Service that gives each node a stable DNS name, a StatefulSet
//! of nodes with a persistent volume each for fjall, a Secret holding the
//! cluster's meta file (its fresh admin token, which is also the peer
//! secret), and a Job that runs `dynabed experiment` against the nodes and
//! keeps its files on a volume of its own.
//!
//! The node itself is unchanged: it takes an IP to listen on (the pod's,
//! from the downward API) and seeds as IP:port, so each container starts
//! with a short `sh` script that turns its peers' stable names into
//! addresses. Every value the script uses comes in through environment
//! variables, never spliced into the script's text.

use serde_json::{json, Value};

use crate::api::cluster::{Meta, Mode};
use crate::api::ring::default_partitions;

/// The StatefulSet, its Service and the prefix of its pods' names.
pub const SET: &str = "dynabed";
const SECRET: &str = "dynabed-cluster";
const JOB: &str = "dynabed-experiment";
const RESULTS: &str = "dynabed-results";
const CLIENT_PORT: u16 = 60000;
const PEER_PORT: u16 = 61000;
/// Where the Secret's meta file is mounted, beside the (absent) procs file
/// the node's `--cluster_procs` names.
const CONFIG_DIR: &str = "/etc/dynabed";
const DATA_SIZE: &str = "1Gi";
/// The node's volume, and its fjall folder inside it (the driver records it too).
const DATA_MOUNT: &str = "/data";
const DATA_DIR: &str = "/data/fjall";
const REPLICATION: u8 = 3;
/// The one core a node may use: StressChaos's CPU workers share it with
/// the node (see `chaos`), and a node's runtime is single-threaded anyway.
pub const NODE_CPU_LIMIT: &str = "1";

/// The label every object carries; chaos selectors pick pods by it.
pub const PART_OF: (&str, &str) = ("app.kubernetes.io/part-of", "dynabed");
/// The label that tells nodes from the driver.
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// The label Kubernetes gives each StatefulSet pod, naming it.
pub const POD_NAME: &str = "statefulset.kubernetes.io/pod-name";

/// What the rendered cluster is: where, from which image, how many nodes,
/// and how long the driver measures.
pub struct Layout {
    pub namespace: String,
    pub image: String,
    pub nodes: u16,
    pub duration_s: f64,
}

impl Layout {
    /// The pod that runs node `id` (`node1` runs in `dynabed-0`): nodes
    /// keep the ids `cluster up` gives, so a plan runs unchanged on both.
    pub fn pod_of(&self, id: &str) -> anyhow::Result<String> {
        match id.strip_prefix("node").and_then(|n| n.parse::<u16>().ok()) {
            Some(n) if (1..=self.nodes).contains(&n) && id == format!("node{n}") => Ok(format!("{SET}-{}", n - 1)),
            _ => anyhow::bail!("{id} is not a node of this cluster (node1 … node{})", self.nodes),
        }
    }

    fn metadata(&self, name: &str, component: &str) -> Value {
        json!({"name": name, "namespace": self.namespace, "labels": labels(component)})
    }

    pub fn namespace_object(&self) -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace, "labels": labels("namespace")}})
    }

    /// Headless, and publishing pods before they are ready, so that nodes
    /// starting together can find each other to seed from.
    pub fn service(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self.metadata(SET, "node"),
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": true,
                "selector": labels("node"),
                "ports": [
                    {"name": "client", "port": CLIENT_PORT, "targetPort": "client"},
                    {"name": "peer", "port": PEER_PORT, "targetPort": "peer"},
                ],
            },
        })
    }

    /// The meta file `cluster up` would write, with a fresh token.
    pub fn secret(&self, admin_token: String) -> anyhow::Result<Value> {
        let meta = Meta {
            n: REPLICATION,
            partitions: self.partitions(),
            mode: Mode::Loopback,
            prefix: "k8s".into(),
            client_netns: None,
            admin_token,
            nodes: Default::default(),
            hosts: None,
        };
        Ok(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": self.metadata(SECRET, "config"),
            "type": "Opaque",
            "stringData": {"cluster_procs.meta.json": serde_json::to_string_pretty(&meta)?},
        }))
    }

    fn partitions(&self) -> u32 {
        default_partitions(usize::from(self.nodes))
    }

    pub fn stateful_set(&self) -> Value {
        let container = json!({
            "name": "node",
            "image": self.image,
            "command": ["sh", "-c", NODE_SCRIPT],
            "env": self.common_env().into_iter().chain([
                json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
                env("PARTITIONS", self.partitions()),
            ]).collect::<Vec<_>>(),
            "ports": [
                {"name": "client", "containerPort": CLIENT_PORT},
                {"name": "peer", "containerPort": PEER_PORT},
            ],
            "readinessProbe": {"tcpSocket": {"port": "client"}, "periodSeconds": 2},
            "resources": {"limits": {"cpu": NODE_CPU_LIMIT}},
            "volumeMounts": [
                {"name": "data", "mountPath": DATA_MOUNT},
                {"name": "config", "mountPath": CONFIG_DIR, "readOnly": true},
            ],
        });
        json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": self.metadata(SET, "node"),
            "spec": {
                "serviceName": SET,
                "replicas": self.nodes,
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": labels("node")},
                "template": {
                    "metadata": {"labels": labels("node")},
                    "spec": {
                        "containers": [container],
                        "volumes": [{"name": "config", "secret": {"secretName": SECRET, "defaultMode": 0o400}}],
                    },
                },
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data", "labels": labels("node")},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": DATA_SIZE}}},
                }],
            },
        })
    }

    /// The settings the node and driver scripts share.
    fn common_env(&self) -> Vec<Value> {
        vec![
            env("NODES", self.nodes),
            env("SET", SET),
            env("SERVICE", format!("{SET}.{}.svc", self.namespace)),
            env("CLIENT_PORT", CLIENT_PORT),
            env("PEER_PORT", PEER_PORT),
            env("CONFIG_DIR", CONFIG_DIR),
            env("DATA_DIR", DATA_DIR),
        ]
    }

    pub fn results_claim(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": self.metadata(RESULTS, "driver"),
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": DATA_SIZE}}},
        })
    }

    /// The driver, run once: a failed run is looked at, not repeated.
    pub fn job(&self) -> Value {
        let duration = self.duration_s.to_string();
        json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": self.metadata(JOB, "driver"),
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"labels": labels("driver")},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{
                            "name": "experiment",
                            "image": self.image,
                            "command": ["sh", "-c", DRIVER_SCRIPT, "driver", "--duration", duration],
                            "env": self.common_env().into_iter().chain([
                                env("WORK_DIR", "/work"),
                                env("RESULTS_DIR", "/results"),
                            ]).collect::<Vec<_>>(),
                            "volumeMounts": [
                                {"name": "results", "mountPath": "/results"},
                                {"name": "config", "mountPath": CONFIG_DIR, "readOnly": true},
                                {"name": "work", "mountPath": "/work"},
                            ],
                        }],
                        "volumes": [
                            {"name": "results", "persistentVolumeClaim": {"claimName": RESULTS}},
                            {"name": "config", "secret": {"secretName": SECRET, "defaultMode": 0o400}},
                            {"name": "work", "emptyDir": {}},
                        ],
                    },
                },
            },
        })
    }

    /// A pod that mounts the results volume once the Job is done, for
    /// `kubectl cp` (a finished pod's files cannot be copied).
    pub fn results_reader(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": self.metadata("dynabed-results-reader", "driver"),
            "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "reader",
                    "image": self.image,
                    "command": ["sleep", "3600"],
                    "volumeMounts": [{"name": "results", "mountPath": "/results", "readOnly": true}],
                }],
                "volumes": [{"name": "results", "persistentVolumeClaim": {"claimName": RESULTS}}],
            },
        })
    }
}

/// Starts a node: its id from its pod's ordinal (`dynabed-0` is node1), its
/// seeds every peer whose name already resolves (at least one, waiting for
/// it), its token from the Secret's meta file.
const NODE_SCRIPT: &str = r#"set -eu
ordinal=${HOSTNAME##*-}
seeds=""
while [ -z "$seeds" ]; do
  i=0
  while [ "$i" -lt "$NODES" ]; do
    if [ "$i" != "$ordinal" ]; then
      ip=$(getent hosts "$SET-$i.$SERVICE" | awk '{print $1}')
      if [ -n "$ip" ]; then seeds="${seeds:+$seeds,}$ip:$PEER_PORT"; fi
    fi
    i=$((i + 1))
  done
  if [ -z "$seeds" ]; then sleep 1; fi
done
exec dynabed node --id "node$((ordinal + 1))" --host "$POD_IP" --port "$CLIENT_PORT" --peer_port "$PEER_PORT" \
  --seeds "$seeds" --partitions "$PARTITIONS" --storage fjall --data_dir "$DATA_DIR" \
  --cluster_procs "$CONFIG_DIR/cluster_procs.json"
"#;

/// Writes the cluster file the driver reads — every node's address, found
/// by its stable name — next to the Secret's meta file, then runs the
/// driver with the Job's arguments.
const DRIVER_SCRIPT: &str = r#"set -eu
cp "$CONFIG_DIR/cluster_procs.meta.json" "$WORK_DIR/"
procs=$WORK_DIR/cluster_procs.json
printf '{' >"$procs"
i=0
while [ "$i" -lt "$NODES" ]; do
  ip=""
  while [ -z "$ip" ]; do
    ip=$(getent hosts "$SET-$i.$SERVICE" | awk '{print $1}')
    if [ -z "$ip" ]; then sleep 1; fi
  done
  if [ "$i" -gt 0 ]; then printf ',' >>"$procs"; fi
  printf '"node%d": {"pid": 0, "port": %d, "host": "%s", "peer_port": %d, "netns": null, "data_dir": "%s"}' \
    "$((i + 1))" "$CLIENT_PORT" "$ip" "$PEER_PORT" "$DATA_DIR" >>"$procs"
  i=$((i + 1))
done
printf '}\n' >>"$procs"
exec dynabed experiment --cluster_procs "$procs" --out "$RESULTS_DIR" "$@"
"#;

fn labels(component: &str) -> Value {
    json!({PART_OF.0: PART_OF.1, COMPONENT: component})
}

fn env(name: &str, value: impl ToString) -> Value {
    json!({"name": name, "value": value.to_string()})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout { namespace: "dyn".into(), image: "dynabed:latest".into(), nodes: 5, duration_s: 60.0 }
    }

    #[test]
    fn node_ids_are_the_ids_cluster_up_gives() {
        let layout = layout();
        assert_eq!(layout.pod_of("node1").unwrap(), "dynabed-0");
        assert_eq!(layout.pod_of("node5").unwrap(), "dynabed-4");
        for wrong in ["node0", "node6", "node01", "dynabed-1", "node"] {
            let err = layout.pod_of(wrong).unwrap_err().to_string();
            assert!(err.contains("node1 … node5"), "{wrong}: {err}");
        }
    }

    #[test]
    fn the_secret_holds_a_meta_file_the_node_and_driver_read() {
        let secret = layout().secret("t0k3n".into()).unwrap();
        let text = secret["stringData"]["cluster_procs.meta.json"].as_str().unwrap();
        let meta: Meta = serde_json::from_str(text).unwrap();
        assert_eq!((meta.admin_token.as_str(), meta.n, meta.partitions), ("t0k3n", 3, 256));
    }
}
