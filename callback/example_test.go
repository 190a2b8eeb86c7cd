package callback_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/sluicehq/sluice/callback"
)

func ExampleSigner_Sign() {
	s, err := callback.NewSigner([]string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
	if err != nil {
		panic(err)
	}
	fmt.Println(s.Sign("msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`)))
	// Output: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=
}

func ExampleKeyring_Secrets() {
	k, err := callback.NewKeyring([]string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, map[string][]string{"acme": nil})
	if err != nil {
		panic(err)
	}
	fmt.Println(k.Secrets("")) // a gateway without tenants: its own secret
	fmt.Println(k.Secrets("acme"))
	// Output:
	// [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]
	// [whsec_59fJ8MthteMNkSJu7WY3Rma1KIQletGiJ9cqZj7IOYA=]
}

func ExampleGuard_CheckURL() {
	g, err := callback.NewGuard([]string{"10.1.0.0/16"})
	if err != nil {
		panic(err)
	}
	fmt.Println(g.CheckURL("https://hooks.example.com/sluice"))
	fmt.Println(g.CheckURL("http://10.1.2.3:8080/done"))
	fmt.Println(g.CheckURL("http://169.254.169.254/latest/meta-data/"))
	fmt.Println(g.CheckURL("ftp://hooks.example.com/"))
	// Output:
	// <nil>
	// <nil>
	// callback: refused callback URL: host 169.254.169.254 is not a permitted address (loopback, private, link-local and similar addresses are refused)
	// callback: refused callback URL: scheme must be http or https
}

func ExampleGuard_Permitted() {
	var g callback.Guard // the zero Guard allows nothing extra
	for _, s := range []string{"93.184.216.34", "127.0.0.1", "::ffff:10.0.0.1", "fe80::1"} {
		fmt.Println(s, g.Permitted(netip.MustParseAddr(s)))
	}
	// Output:
	// 93.184.216.34 true
	// 127.0.0.1 false
	// ::ffff:10.0.0.1 false
	// fe80::1 false
}
