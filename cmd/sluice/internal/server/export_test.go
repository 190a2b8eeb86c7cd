package server

import "net/http"

// What the tests in package server_test look at inside a gateway.

var FitSizes = fitSizes

func (p *Gateway) HTTPServer() *http.Server { return p.httpSrv }

var ServerTLSConfig = serverTLSConfig
