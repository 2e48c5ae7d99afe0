// The pod sandbox ("pause") image's one binary, built locally: no registry is reachable.
module rewind.dev/devcluster/pause

go 1.26.0
