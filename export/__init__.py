"""The on-device kit: standalone scripts copied into every bundle (installed as wave_deploy._kit)."""
