//! The fast path's DEL: host-local releases the address and the pod's nat rules go; the veth
//! is left to go with the namespace. It never execs a plugin.

use std::net::IpAddr;

use super::hostlocal::Store;
use super::plan::{port_maps, FastPlan};
use super::rules::{self, PodRules};
use super::{in_process_error, FastPath};
use crate::cni::result::parse_result;
use crate::cni::{Cache, CacheEntry, CniError, CniResult, RuntimeConf};
use crate::netlink::ip::parse_cidr;
use crate::netlink::netfilter::nftables;

impl FastPath {
    /// DEL for an attachment made by either path: host-local releases the address, the
    /// pod's nat rules go; the veth is left to go with the namespace. Nothing cached is
    /// fine (interrupted ADD): the rules are then found by their chain names.
    pub async fn del(
        &self,
        plan: &FastPlan,
        rt: &RuntimeConf,
        cached: Option<&CacheEntry>,
        cache: &Cache,
    ) -> Result<(), CniError> {
        let net = &plan.network;
        release(plan, rt).await?;
        let result = cached
            .and_then(|c| c.result.as_ref())
            .and_then(|r| parse_result(&plan.cni_version, r.to_string().as_bytes()).ok());
        let maps = cached
            .map(|c| port_maps(plan, &c.capability_args))
            .transpose()
            .map_err(|e| in_process_error(net, "portmap", "DEL", e))?
            .unwrap_or_default();
        for v6 in [false, true] {
            let exact = result
                .as_ref()
                .map(|r| plan.pod_rules(&rt.container_id, v6, family_addrs(r, v6), &maps));
            self.delete_family_rules(plan, &rt.container_id, v6, exact)
                .await?;
        }
        cache
            .remove(net, &rt.container_id, &rt.ifname)
            .map_err(|source| CniError::Cache {
                path: cache.path(net, &rt.container_id, &rt.ifname),
                source,
            })
    }

    /// One family's nat rules of the pod, gone: over nf_tables netlink when iptables is the
    /// nf_tables variant, else by the exact batch of what ADD wrote (`exact`, when the
    /// result was cached), else by what the live table holds.
    async fn delete_family_rules(
        &self,
        plan: &FastPlan,
        container_id: &str,
        v6: bool,
        exact: Option<PodRules>,
    ) -> Result<(), CniError> {
        let net = &plan.network;
        let nothing_there = match &exact {
            Some(rules) => rules.is_empty(),
            // Nothing known: only look when this family could hold rules.
            None => !plan.ip_masq && plan.portmap.is_none(),
        };
        if nothing_there {
            return Ok(());
        }
        if self.uses_nf_tables(v6).await {
            match self.delete_nat_chains(v6, container_id, net).await {
                Ok(()) => return Ok(()),
                Err(e) => tracing::warn!(
                    network = %net, container_id = %container_id, v6, error = %e,
                    "deleting the pod's nat rules over netlink failed; using iptables-restore"
                ),
            }
        }
        // The exact batch; if something in it was already gone, it fails as a whole and
        // the live table decides.
        if let Some(rules) = exact {
            if rules::restore(v6, &rules.del_batch(), &self.path_env)
                .await
                .is_ok()
            {
                return Ok(());
            }
        }
        self.delete_live_rules(net, container_id, v6).await
    }

    /// Something was already gone (or nothing is known): delete what the live nat table
    /// holds of the pod's chains.
    async fn delete_live_rules(
        &self,
        net: &str,
        container_id: &str,
        v6: bool,
    ) -> Result<(), CniError> {
        let nat = match rules::save_nat(v6, &self.path_env).await {
            Ok(nat) => nat,
            // No ip6tables nat table support: nothing of ours can be there.
            Err(_) if v6 => return Ok(()),
            Err(e) => return Err(in_process_error(net, "bridge", "DEL", e)),
        };
        let batch = rules::reconcile_del_batch(&nat, &rules::pod_chains(net, container_id));
        rules::restore(v6, &batch, &self.path_env)
            .await
            .map_err(|e| in_process_error(net, "bridge", "DEL", e))
    }

    /// The pod's ipMasq and portmap chains and every jump to them, in one nf_tables
    /// transaction over the kept socket.
    async fn delete_nat_chains(
        &self,
        v6: bool,
        container_id: &str,
        network: &str,
    ) -> std::io::Result<()> {
        let chains = rules::pod_chains(network, container_id);
        let removed = self
            .with_nat_socket(move |socket| nftables::delete_chains(socket, v6, &chains))
            .await?;
        tracing::debug!(
            network,
            container_id,
            v6,
            ?removed,
            "pod nat rules deleted over netlink"
        );
        Ok(())
    }
}

/// host-local: the pod's addresses released, off the async workers.
async fn release(plan: &FastPlan, rt: &RuntimeConf) -> Result<(), CniError> {
    let net = &plan.network;
    let store = Store::new(&plan.data_dir, net);
    let (id, ifname) = (rt.container_id.clone(), rt.ifname.clone());
    tokio::task::spawn_blocking(move || store.release(&id, &ifname))
        .await
        .map_err(|e| in_process_error(net, "host-local", "DEL", e))?
        .map_err(|e| in_process_error(net, "host-local", "DEL", e))
}

/// The result's addresses of one family, with their prefixes.
fn family_addrs(result: &CniResult, v6: bool) -> Vec<(IpAddr, u8)> {
    result
        .ips
        .iter()
        .filter_map(|ip| parse_cidr(&ip.address))
        .filter(|(a, _)| a.is_ipv6() == v6)
        .collect()
}
