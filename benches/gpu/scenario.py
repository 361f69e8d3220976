"""Prints a fake-NVML scenario of N H100s with every field supported and telemetry that
changes every second, for benches/gpu.sh."""
import json
import sys

n = int(sys.argv[1])


def series(base, spread):
    return [[t * 1000, base + (t * 7) % spread] for t in range(0, 600)]


gpus = []
for i in range(n):
    gpus.append({
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": f"GPU-6f1c2a4e-0000-4000-8000-{0xabc000 + i:012x}",
        "pci_bus_id": f"00000000:{0x18 + i * 0x11:02X}:00.0",
        "serial": f"165242300{i:04}",
        "memory_total": 85520809984,
        "compute_capability": "9.0",
        "mig": False,
        "persistence": True,
        "power_limit_mw": 700000,
        "telemetry": {
            "gpu_util": series(40, 60),
            "mem_util": series(10, 50),
            "fb_used": 1073741824 * (i + 1),
            "fb_reserved": 536870912,
            "gpu_temp": series(40, 30),
            "memory_temp": series(50, 30),
            "power_mw": series(300000, 300000),
            "energy_mj": 123456789000,
            "sm_clock": 1980,
            "mem_clock": 2619,
            "throttle_reasons": 1,
            "ecc_sbe_volatile": 0,
            "ecc_dbe_volatile": 0,
            "ecc_sbe_aggregate": 0,
            "ecc_dbe_aggregate": 0,
            "retired_pages_sbe": 0,
            "retired_pages_dbe": 0,
            "retired_pages_pending": False,
            "remapped_rows_correctable": 0,
            "remapped_rows_uncorrectable": 0,
            "remap_pending": False,
            "remap_failed": False,
            "pcie_replay": 0,
        },
    })
json.dump({"driver_version": "550.54.15", "cuda_driver_version": "12.4",
           "nvml_version": "12.550.54.15", "gpus": gpus, "xids": [], "errors": []}, sys.stdout)
