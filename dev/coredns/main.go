// Command coredns is CoreDNS with only the plugins the local cluster's node needs: it
// answers for Services of cluster.local from the API server, and for no other name (it
// forwards nothing, so no query leaves the node). Built like CoreDNS's own "custom
// build": the plugins are imported and their order is set before coremain runs.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{"bind", "errors", "health", "ready", "kubernetes"}
}

func main() { coremain.Run() }
