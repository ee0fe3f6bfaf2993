// Counter-based random numbers: a pure function of (seed, stream, counter), so a dropout mask is
// reproducible and can be regenerated instead of stored. The CPU twin is `cpu::rng_u32`.
fn pcg_hash(x: u32) -> u32 {
    let state = x * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

fn rng_u32(seed: u32, stream: u32, counter: u32) -> u32 {
    return pcg_hash(pcg_hash(pcg_hash(seed) ^ stream) ^ counter);
}

// Uniform in [0, 1) with 24 bits of resolution.
fn rng_uniform(seed: u32, stream: u32, counter: u32) -> f32 {
    return f32(rng_u32(seed, stream, counter) >> 8u) * (1.0 / 16777216.0);
}
