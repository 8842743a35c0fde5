//! The connected plugins and the pods they know, and the delivery of pod events to them.
//!
//! One short lock guards both lists and is never held across a plugin call. A Run records its
//! pod and takes the plugin list under it; a new plugin takes the pod list and joins under it,
//! with its own queue held until its Synchronize is done. So a plugin that connects during a
//! Run either finds the pod in its Synchronize or gets the event after it: never neither.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

use super::plugin::{Outcome, Plugin, Queue};
use super::proto::api::{Event, PodSandbox};

/// A plugin's answer that fails a RunPodSandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub plugin: String,
    pub message: String,
}

/// A connected plugin, as verbose Status shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub index: String,
    pub events: Vec<&'static str>,
}

/// How long one plugin took with one event of a pod.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HookTime {
    pub plugin: String,
    pub event: &'static str,
    pub micros: u64,
}

struct KnownPod {
    pod: PodSandbox,
    stopped: bool,
    hooks: Vec<HookTime>,
}

#[derive(Default)]
struct Inner {
    /// In ascending index order (then name): the order plugins are called in.
    plugins: Vec<Arc<Plugin>>,
    pods: BTreeMap<String, KnownPod>,
}

#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

/// Reports plugin counts and hook times; `telemetry` implements it for the metrics.
pub trait HookObserver: Send + Sync {
    fn plugins(&self, connected: usize);
    fn hook(&self, plugin: &str, event: &'static str, took: Duration, failed: bool);
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pods that exist when crisp starts (after recovery); stopped ones get no Stop again.
    pub fn seed(&self, pods: impl IntoIterator<Item = (PodSandbox, bool)>) {
        let mut inner = self.lock();
        for (pod, stopped) in pods {
            let known = KnownPod {
                pod,
                stopped,
                hooks: Vec::new(),
            };
            inner.pods.insert(known.pod.id.clone(), known);
        }
    }

    /// Joins a configured plugin: it is synchronized with every known pod before any event.
    pub async fn admit(
        self: &Arc<Self>,
        plugin: Plugin,
        queue: OwnedMutexGuard<Queue>,
        observer: &dyn HookObserver,
    ) -> Result<Arc<Plugin>, String> {
        let plugin = Arc::new(plugin);
        let pods = {
            let mut inner = self.lock();
            let at = inner
                .plugins
                .partition_point(|p| p.identity <= plugin.identity);
            inner.plugins.insert(at, plugin.clone());
            inner.pods.values().map(|k| k.pod.clone()).collect()
        };
        observer.plugins(self.connected().len());
        let synced = plugin.synchronize(&queue, pods).await;
        drop(queue);
        if let Err(e) = synced {
            self.forget(&plugin, observer).await;
            return Err(format!("{}: {e}", plugin.identity));
        }
        Ok(plugin)
    }

    /// Drops a plugin whose connection is gone (or must go).
    pub async fn forget(&self, plugin: &Arc<Plugin>, observer: &dyn HookObserver) {
        self.lock().plugins.retain(|p| !Arc::ptr_eq(p, plugin));
        observer.plugins(self.connected().len());
        plugin.close().await;
    }

    pub fn connected(&self) -> Vec<PluginInfo> {
        self.lock()
            .plugins
            .iter()
            .filter(|p| !p.is_closed())
            .map(|p| PluginInfo {
                name: p.identity.name.clone(),
                index: p.identity.index.clone(),
                events: p.events.names(),
            })
            .collect()
    }

    pub fn hook_times(&self, pod_id: &str) -> Vec<HookTime> {
        self.lock()
            .pods
            .get(pod_id)
            .map(|k| k.hooks.clone())
            .unwrap_or_default()
    }

    /// RunPodSandbox, in index order. The first plugin that answers with an error stops the
    /// chain; the plugins that already accepted are told RemovePodSandbox, and the pod is
    /// forgotten. A plugin that times out or breaks is disconnected and skipped.
    pub async fn run_pod_sandbox(
        &self,
        pod: PodSandbox,
        observer: &dyn HookObserver,
    ) -> Result<(), Rejection> {
        let plugins = {
            let mut inner = self.lock();
            let known = KnownPod {
                pod: pod.clone(),
                stopped: false,
                hooks: Vec::new(),
            };
            inner.pods.insert(pod.id.clone(), known);
            inner.plugins.clone()
        };
        let mut accepted = Vec::new();
        for plugin in plugins {
            match self
                .deliver(&plugin, Event::RunPodSandbox, &pod, observer)
                .await
            {
                Outcome::Accepted(_) => accepted.push(plugin),
                Outcome::Rejected(message) => {
                    self.lock().pods.remove(&pod.id);
                    for earlier in accepted {
                        self.deliver(&earlier, Event::RemovePodSandbox, &pod, observer)
                            .await;
                    }
                    let plugin = plugin.identity.to_string();
                    return Err(Rejection { plugin, message });
                }
                Outcome::Skipped | Outcome::Disconnected(_) => {}
            }
        }
        Ok(())
    }

    /// StopPodSandbox, once per pod: a repeated Stop sends nothing. Errors are logged only.
    pub async fn stop_pod_sandbox(&self, pod_id: &str, observer: &dyn HookObserver) {
        let (pod, plugins) = {
            let mut inner = self.lock();
            let Some(known) = inner.pods.get_mut(pod_id).filter(|k| !k.stopped) else {
                return;
            };
            known.stopped = true;
            (known.pod.clone(), inner.plugins.clone())
        };
        for plugin in plugins {
            self.deliver(&plugin, Event::StopPodSandbox, &pod, observer)
                .await;
        }
    }

    /// RemovePodSandbox, once per pod; the pod is forgotten. Errors are logged only.
    pub async fn remove_pod_sandbox(&self, pod_id: &str, observer: &dyn HookObserver) {
        let (pod, plugins) = {
            let mut inner = self.lock();
            let Some(known) = inner.pods.remove(pod_id) else {
                return;
            };
            (known.pod, inner.plugins.clone())
        };
        for plugin in plugins {
            self.deliver(&plugin, Event::RemovePodSandbox, &pod, observer)
                .await;
        }
    }

    async fn deliver(
        &self,
        plugin: &Arc<Plugin>,
        event: Event,
        pod: &PodSandbox,
        observer: &dyn HookObserver,
    ) -> Outcome {
        let outcome = plugin.pod_event(event, pod).await;
        let name = plugin.identity.to_string();
        let event_name = event_label(event);
        match &outcome {
            Outcome::Skipped => {}
            Outcome::Accepted(took) => {
                observer.hook(&name, event_name, *took, false);
                if let Some(known) = self.lock().pods.get_mut(&pod.id) {
                    known.hooks.push(HookTime {
                        plugin: name,
                        event: event_name,
                        micros: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                    });
                }
            }
            Outcome::Rejected(message) => {
                observer.hook(&name, event_name, Duration::ZERO, true);
                tracing::warn!(
                    plugin = %name,
                    event = event_name,
                    sandbox_id = %pod.id,
                    %message,
                    "NRI plugin returned an error",
                );
            }
            Outcome::Disconnected(why) => {
                observer.hook(&name, event_name, Duration::ZERO, true);
                tracing::error!(
                    plugin = %name,
                    event = event_name,
                    sandbox_id = %pod.id,
                    error = %why,
                    "NRI plugin disconnected; going on without it",
                );
                self.forget(plugin, observer).await;
            }
        }
        outcome
    }

    /// Tells every plugin crisp is going down and closes their connections.
    pub async fn shut_down(&self) {
        let plugins = std::mem::take(&mut self.lock().plugins);
        futures::future::join_all(plugins.iter().map(|p| p.shutdown())).await;
    }
}

/// The event's name in logs, metrics and verbose status, as NRI's `PrettyName` spells it.
pub fn event_label(event: Event) -> &'static str {
    match event {
        Event::RunPodSandbox => "RunPodSandbox",
        Event::StopPodSandbox => "StopPodSandbox",
        Event::RemovePodSandbox => "RemovePodSandbox",
        _ => "other",
    }
}
