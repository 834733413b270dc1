#!/usr/bin/env python3
"""Fuse a coherency-frames dump with Open3D, for a side-by-side with coherency-recon.

Produce the dump and the Rust figures first:

    cargo run --release -p coherency-recon --example fuse_frames -- write /tmp/scan 1 60
    cargo run --release -p coherency-recon --example fuse_frames -- fuse /tmp/scan 1.0 /tmp/scan/recon.ply

then, inside a venv with open3d==0.19.0 and numpy:

    python recon/bench/open3d_compare.py /tmp/scan --voxel-mm 1.0

It fuses the same depth maps and poses with Open3D's ScalableTSDFVolume (legacy,
CPU) and, when available, the tensor VoxelBlockGrid; prints frames/s for each;
extracts the mesh and, if recon.ply exists in the dump, the symmetric mean and 95th
percentile surface distance between the two meshes (sampled points).
"""

import argparse
import json
import os
import time

import numpy as np
import open3d as o3d


def load(dump):
    with open(os.path.join(dump, "scan.json")) as f:
        doc = json.load(f)
    if doc.get("format") != "coherency-frames":
        raise SystemExit("not a coherency-frames dump")
    k = doc["intrinsics"]
    frames = []
    for fr in doc["frames"]:
        depth = np.load(os.path.join(dump, fr["depth"])).astype(np.float32)
        depth[~np.isfinite(depth)] = 0.0
        world_from_camera = np.array(fr["pose"], dtype=np.float64).reshape(4, 4)
        frames.append((depth, world_from_camera))
    return doc, k, frames


def fuse_legacy(k, frames, voxel, trunc, depth_max):
    intr = o3d.camera.PinholeCameraIntrinsic(k["width"], k["height"], k["fx"], k["fy"], k["cx"], k["cy"])
    vol = o3d.pipelines.integration.ScalableTSDFVolume(
        voxel_length=voxel, sdf_trunc=trunc, color_type=o3d.pipelines.integration.TSDFVolumeColorType.NoColor
    )
    color = o3d.geometry.Image(np.zeros((k["height"], k["width"], 3), dtype=np.uint8))
    images = [
        o3d.geometry.RGBDImage.create_from_color_and_depth(
            color, o3d.geometry.Image(d), depth_scale=1.0, depth_trunc=depth_max, convert_rgb_to_intensity=False
        )
        for d, _ in frames
    ]
    t0, c0 = time.perf_counter(), time.process_time()
    for img, (_, pose) in zip(images, frames):
        vol.integrate(img, intr, np.linalg.inv(pose))  # Open3D wants camera-from-world
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    t1 = time.perf_counter()
    mesh = vol.extract_triangle_mesh()
    return mesh, dt, (time.perf_counter() - t1) * 1e3, cpu


def fuse_tensor(k, frames, voxel, trunc, depth_max):
    dev = o3d.core.Device("CPU:0")
    grid = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight"),
        attr_dtypes=(o3d.core.float32, o3d.core.float32),
        attr_channels=((1), (1)),
        voxel_size=voxel,
        block_resolution=8,
        block_count=50000,
        device=dev,
    )
    intr = o3d.core.Tensor(
        [[k["fx"], 0, k["cx"]], [0, k["fy"], k["cy"]], [0, 0, 1]], dtype=o3d.core.float64
    )
    depths = [o3d.t.geometry.Image(o3d.core.Tensor(d)).to(dev) for d, _ in frames]
    t0 = time.perf_counter()
    for depth, (_, pose) in zip(depths, frames):
        extr = o3d.core.Tensor(np.linalg.inv(pose))
        coords = grid.compute_unique_block_coordinates(depth, intr, extr, 1.0, depth_max, trunc_voxel_multiplier=trunc / voxel)
        grid.integrate(coords, depth, intr, extr, 1.0, depth_max, trunc_voxel_multiplier=trunc / voxel)
    dt = time.perf_counter() - t0
    return grid.extract_triangle_mesh().to_legacy(), dt


def surface_distance(a, b, n=200000):
    pa = a.sample_points_uniformly(n)
    pb = b.sample_points_uniformly(n)
    d1 = np.asarray(pa.compute_point_cloud_distance(pb))
    d2 = np.asarray(pb.compute_point_cloud_distance(pa))
    d = np.concatenate([d1, d2])
    return d.mean(), np.percentile(d, 95)


def bench_legacy(k, frames, voxel, trunc, depth_max, runs):
    """Median frames/s (wall clock and from the process's CPU time, which other processes
    loading the machine barely change) and extract_triangle_mesh ms over `runs` runs after
    one warm-up."""
    fps, cpu_fps, ext = [], [], []
    mesh = None
    for run in range(runs + 1):
        mesh, dt, ext_ms, cpu = fuse_legacy(k, frames, voxel, trunc, depth_max)
        if run > 0:
            fps.append(len(frames) / dt)
            cpu_fps.append(len(frames) / max(cpu, 1e-9))
            ext.append(ext_ms)
    return float(np.median(fps)), float(np.median(cpu_fps)), float(np.median(ext)), mesh


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dump")
    ap.add_argument("--voxel-mm", type=float, default=1.0)
    ap.add_argument("--trunc-voxels", type=float, default=4.0)
    ap.add_argument("--depth-max", type=float, default=0.8)
    ap.add_argument("--runs", type=int, default=0, help="benchmark mode: warm-up + RUNS runs, one JSON line")
    ap.add_argument("--threads", type=int, default=0, help="label only; set OMP_NUM_THREADS to limit Open3D")
    args = ap.parse_args()
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    doc, k, frames = load(args.dump)
    voxel = args.voxel_mm / 1000.0
    trunc = voxel * args.trunc_voxels
    if args.runs > 0:
        fps, cpu_fps, ext, mesh = bench_legacy(k, frames, voxel, trunc, args.depth_max, args.runs)
        print(json.dumps({"impl": f"open3d-{o3d.__version__}-ScalableTSDFVolume", "voxel_mm": args.voxel_mm,
                          "threads": args.threads, "frames": len(frames), "fps": round(fps, 1),
                          "cpu_fps": round(cpu_fps, 1),
                          "extract_ms": round(ext, 2), "vertices": len(mesh.vertices)}))
        return
    print(f"open3d {o3d.__version__}: {len(frames)} frames {k['width']}x{k['height']}, voxel {args.voxel_mm} mm")

    mesh, dt, ext_ms, _ = fuse_legacy(k, frames, voxel, trunc, args.depth_max)
    print(f"legacy ScalableTSDFVolume: {len(frames) / dt:.0f} frames/s ({dt * 1e3:.0f} ms), "
          f"extract_triangle_mesh {ext_ms:.0f} ms, "
          f"{len(mesh.vertices)} vertices {len(mesh.triangles)} triangles")
    mesh.compute_vertex_normals()
    o3d.io.write_triangle_mesh(os.path.join(args.dump, "open3d.ply"), mesh)
    try:
        tmesh, tdt = fuse_tensor(k, frames, voxel, trunc, args.depth_max)
        print(f"tensor VoxelBlockGrid: {len(frames) / tdt:.0f} frames/s ({tdt * 1e3:.0f} ms), "
              f"{len(tmesh.vertices)} vertices")
    except Exception as e:  # the tensor API differs across builds; the legacy figure is the reference
        print(f"tensor VoxelBlockGrid skipped: {e}")

    ours = os.path.join(args.dump, "recon.ply")
    if os.path.exists(ours):
        rm = o3d.io.read_triangle_mesh(ours)
        # Compare only around the wound: crop both to the coherency mesh's bounds.
        box = rm.get_axis_aligned_bounding_box()
        cropped = mesh.crop(box)
        mean, p95 = surface_distance(rm, cropped)
        print(f"surface distance coherency-recon vs open3d: mean {mean * 1e3:.3f} mm, p95 {p95 * 1e3:.3f} mm")
    if doc.get("truth"):
        print("ground truth:", json.dumps(doc["truth"]))


if __name__ == "__main__":
    main()
