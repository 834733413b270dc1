//! Keeping WebRTC on 127.0.0.1: the one setting every webrtc-rs peer of the project uses
//! when it must not leave the machine (tests, load runs, single-machine demos) — the SFU,
//! the scan data-channel server and client, and the load generator's peers.

use webrtc::api::setting_engine::SettingEngine;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;

/// Gathers loopback UDP4 host candidates only (webrtc-rs skips loopback unless told), with
/// interfaces filtered to `lo` and multicast DNS off.
pub fn restrict_to_loopback(setting: &mut SettingEngine) {
    setting.set_include_loopback_candidate(true);
    setting.set_interface_filter(Box::new(|name: &str| name == "lo"));
    setting.set_network_types(vec![NetworkType::Udp4]);
    setting.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
}
