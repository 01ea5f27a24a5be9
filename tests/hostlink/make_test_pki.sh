#!/bin/sh
# make_test_pki.sh DIR — a throw-away dev PKI for the hostlink TLS tests, made
# with the openssl CLI (EC P-256): good host and device certificates, and the
# bad host certificates the link must refuse.
#   ca        provisioning/host CA            ca2       a second, unrelated CA
#   host      CN/SAN localhost, 127.0.0.1     device    CN=kiosk-test-1 (clientAuth)
#   host_ca2  as host, signed by ca2          host_expired  as host, valid 2020..2021
#   host_other  SAN other.example
set -eu
d=$1
mkdir -p "$d"
cd "$d"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }

mkca() { # name cn
	key "$1"
	openssl req -new -x509 -key "$1.key" -out "$1.crt" -days 3650 -subj "/CN=$2" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

csr() { # name cn san
	key "$1"
	openssl req -new -key "$1.key" -subj "/CN=$2" -addext "subjectAltName=$3" -out "$1.csr" 2>/dev/null
}

sign() { # name ca eku
	printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
		"$3" "$4" >"$1.ext"
	openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days 825 \
		-sha256 -out "$1.crt" -extfile "$1.ext" 2>/dev/null
}

mkca ca "kioskpay test CA"
mkca ca2 "some other CA"

csr host localhost "DNS:localhost,IP:127.0.0.1"
sign host ca serverAuth "DNS:localhost,IP:127.0.0.1"
csr device kiosk-test-1 "DNS:kiosk-test-1"
sign device ca clientAuth "DNS:kiosk-test-1"
csr host_ca2 localhost "DNS:localhost,IP:127.0.0.1"
sign host_ca2 ca2 serverAuth "DNS:localhost,IP:127.0.0.1"
csr host_other other.example "DNS:other.example"
sign host_other ca serverAuth "DNS:other.example"

# An expired certificate: openssl 3.0's x509 cannot back-date, `openssl ca` can.
mkdir -p cadb
: >cadb/index.txt
echo 1000 >cadb/serial
cat >ca.cnf <<EOF
[ca]
default_ca = kp
[kp]
database = cadb/index.txt
serial = cadb/serial
new_certs_dir = cadb
default_md = sha256
policy = any
copy_extensions = copy
unique_subject = no
[any]
commonName = supplied
[ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
EOF
csr host_expired localhost "DNS:localhost,IP:127.0.0.1"
openssl ca -batch -config ca.cnf -extensions ext -cert ca.crt -keyfile ca.key -in host_expired.csr \
	-out host_expired.crt -startdate 20200101000000Z -enddate 20210101000000Z -notext 2>/dev/null
