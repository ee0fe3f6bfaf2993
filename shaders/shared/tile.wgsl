// The workgroup tile shared by the *_tiled kernels (gemm_tiled.wgsl and the conv variants): a
// workgroup of 16×16 invocations owns a 64×64 output tile, each invocation a 4×4 block, and the
// reduction advances KSTEP terms at a time through two staged slabs in workgroup memory
// (`sa`: KSTEP × 64 rows as 16 vec4s per term; `sb`: KSTEP × 64 columns likewise).
const TILE: u32 = 64u;
const KSTEP: u32 = 16u;

var<workgroup> sa: array<vec4<f32>, 256>;
var<workgroup> sb: array<vec4<f32>, 256>;

// One K-step on the staged slabs (call between the two barriers): acc[i][j] += Σ_kk a·b for this
// invocation's rows lid.y·4 + i and columns lid.x·4 + j.
fn tile_step(acc: ptr<function, array<vec4<f32>, 4>>, lid: vec3<u32>) {
    for (var kk = 0u; kk < KSTEP; kk++) {
        let av = sa[kk * 16u + lid.y];
        let bv = sb[kk * 16u + lid.x];
        (*acc)[0] = fma(vec4<f32>(av.x), bv, (*acc)[0]);
        (*acc)[1] = fma(vec4<f32>(av.y), bv, (*acc)[1]);
        (*acc)[2] = fma(vec4<f32>(av.z), bv, (*acc)[2]);
        (*acc)[3] = fma(vec4<f32>(av.w), bv, (*acc)[3]);
    }
}
