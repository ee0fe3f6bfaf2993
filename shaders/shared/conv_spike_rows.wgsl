// Reading the spike bit sets of a conv layer's input rows (one per sample, channel and row,
// ceil(w/32) words each). The importer declares `in_bits`.

// 32 bits of a row starting at column s (which may be negative); columns outside the row are 0.
fn row_bits(base: u32, wpr: u32, s: i32) -> u32 {
    if (s < 0) {
        return in_bits[base] << u32(-s);
    }
    let w0 = u32(s) / 32u;
    let sh = u32(s) % 32u;
    var r = 0u;
    if (w0 < wpr) {
        r = in_bits[base + w0] >> sh;
    }
    if (sh != 0u && w0 + 1u < wpr) {
        r = r | (in_bits[base + w0 + 1u] << (32u - sh));
    }
    return r;
}
