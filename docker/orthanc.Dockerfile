# The Orthanc PACS of the compose stack, from Debian's packages, configured like development's
# (scripts/orthanc_config.py): chest films it receives are forwarded to the dicom-receiver service.
FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends orthanc orthanc-dicomweb python3 \
    && rm -rf /var/lib/apt/lists/*
COPY scripts/orthanc_config.py /opt/orthanc_config.py
RUN python3 /opt/orthanc_config.py --dir /var/lib/orthanc-portal --portal-host dicom-receiver --remote-access
EXPOSE 4242 8042
CMD ["Orthanc", "/var/lib/orthanc-portal/config"]
