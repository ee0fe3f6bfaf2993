// fc_event_sim.wgsl with the spikes walked as a list (same Params, bindings and results): at each
// step the workgroup first compacts the previous step's spike bits into the ordered list of the
// inputs that spiked (per-word popcounts, a prefix over the ≤ 32 words, each word's bits written
// at its offset), then every invocation adds the listed rows. The bit-set kernel finds each
// spike with a find-lowest-bit chain whose next step depends on the last; a list is a counted
// loop of independent row loads, which a GPU can unroll and keep several of in flight. On a CPU
// driver reading the list costs an extra per-lane load per spike. Which wins is measured
// (`fsnn bench kernels`, the fc_event_sim rows; docs/BENCHMARKS.md). The list keeps increasing
// input order, so both kernels add the same rows in the same order and agree bit for bit.
#import fc_event_sim_body

// The indices of the inputs that spiked at the previous step, in increasing order, and each
// bit-set word's first slot in it; `spiked` is the list's length.
var<workgroup> spiked_list: array<u32, 1024>; // 4 · WG · PER
var<workgroup> word_start: array<u32, MAX_WORDS>;
var<workgroup> spiked: u32;

fn feedback(fb: ptr<function, array<vec4<f32>, PER>>, lid: u32, words: u32, nq: u32, nper: u32) {
    if (lid == 0u) {
        var total = 0u;
        for (var w = 0u; w < words; w++) {
            word_start[w] = total;
            total += countOneBits(atomicLoad(&sbits[w]));
        }
        spiked = total;
    }
    workgroupBarrier();
    if (lid < words) {
        var m = atomicLoad(&sbits[lid]);
        var o = word_start[lid];
        while (m != 0u) {
            spiked_list[o] = lid * 32u + countTrailingZeros(m);
            m = m & (m - 1u);
            o += 1u;
        }
    }
    let count = workgroupUniformLoad(&spiked);
    for (var j = 0u; j < count; j++) {
        add_row(fb, spiked_list[j], lid, nq, nper);
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    simulate(wid, lid);
}
