"""Device profiles shipped with wave-deploy (installed as the package wave_deploy._profiles)."""
