#!/usr/bin/python3
"""Run inside a lab namespace: botocore's own IMDS client (as boto3 and the AWS CLI use
it, default 1 s timeout and 1 attempt) fetches one harmless value. Prints one JSON line:
the value (or null), whether a token was obtained, and the times. Never prints a token."""

import argparse
import json
import time

from botocore.utils import IMDSFetcher, InstanceMetadataRegionFetcher


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--what", choices=("region", "instance-id"), required=True)
    ap.add_argument("--endpoint-mode", choices=("ipv4", "ipv6"), default="ipv4")
    ap.add_argument("--session-user-agent", action="store_true",
                    help="send the User-Agent of a botocore session, as the credential and "
                    "region providers of a session do (else urllib3's own)")
    args = ap.parse_args()
    config = {"ec2_metadata_service_endpoint_mode": args.endpoint_mode}
    extra = {}
    if args.session_user_agent:
        import botocore.session
        extra["user_agent"] = botocore.session.get_session().user_agent()
    out = {"what": args.what, "endpoint_mode": args.endpoint_mode, "got_token": None}
    started = time.monotonic()
    if args.what == "region":
        # The public path botocore takes to find the region (a token, then the AZ).
        out["value"] = InstanceMetadataRegionFetcher(config=config, **extra).retrieve_region()
    else:
        fetcher = IMDSFetcher(config=config, **extra)
        token = fetcher._fetch_metadata_token()  # None after a timeout: IMDSv1 follows
        out["got_token"] = token is not None
        out["token_seconds"] = round(time.monotonic() - started, 3)
        try:
            resp = fetcher._get_request("latest/meta-data/instance-id", None, token)
            out["value"] = resp.text
        except fetcher._RETRIES_EXCEEDED_ERROR_CLS:
            out["value"] = None
    out["seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
