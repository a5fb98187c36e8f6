# Sourced by docker/build.sh (and by the push test, which builds with the same options).
# A BuildKit builder (buildx: Docker Desktop, Docker Engine 23+) attaches a provenance
# attestation to every image by default, which makes it an OCI index with an unknown/unknown
# entry: SageMaker refuses OCI media types ("Unsupported manifest media type"), and `docker
# manifest create` refuses an index as a source. Without attestations BuildKit writes Docker's
# media types (seen with BuildKit 0.13 and the containerd image store). The classic builder has
# neither the options nor attestations.
buildkit_options() {
  if docker build --help 2>/dev/null | grep -q -- '--provenance'; then
    echo --provenance=false --sbom=false
  fi
}
