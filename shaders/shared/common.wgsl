// Helpers shared by the 1-D kernels. WG must equal `gpu::WG` on the host.
const WG: u32 = 64u;

// Dispatches over more than 65535 workgroups are folded into two dimensions by the host.
fn flat_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}
