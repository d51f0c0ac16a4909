//! Requests to UnionPay's gateway: the common fields of ACP 5.1.0, the operation's own, the
//! merchant's `certId` and the `signature` over all of them, sent as an
//! `application/x-www-form-urlencoded` POST (§1.2 of `../shared/reference/more-wallets.md`).

use moongate_contract::crypto::{KeyError, RsaSigner};
use moongate_contract::x509::X509;
use moongate_contract::{AdapterError, Money};

use crate::sign;

/// A merchant's identity and signing key at UnionPay.
#[derive(Debug)]
pub struct Merchant {
    /// `merId` (15 digits).
    mer_id: String,
    /// `certId`: the decimal serial of the signing certificate.
    cert_id: String,
    signer: RsaSigner,
}

impl Merchant {
    /// From the merchant number, the signing key (PEM) and its certificate (PEM).
    pub fn from_pem(
        mer_id: &str,
        private_key_pem: &str,
        certificate_pem: &str,
    ) -> Result<Merchant, KeyError> {
        Merchant::new(
            mer_id,
            RsaSigner::from_pem(private_key_pem)?,
            &X509::from_pem(certificate_pem)?,
        )
    }

    /// From the merchant number, the signing key and its certificate. A key that is not the
    /// certificate's is refused here: UnionPay would refuse every request it signs.
    pub fn new(mer_id: &str, signer: RsaSigner, certificate: &X509) -> Result<Merchant, KeyError> {
        let probe = b"moongate key check";
        let signature = signer.sign_base64(probe)?;
        if !certificate.verifier().verify_base64(probe, &signature) {
            return Err(KeyError::Rejected(
                "the certificate is not the signing key's",
            ));
        }
        Ok(Merchant {
            mer_id: mer_id.to_owned(),
            cert_id: certificate.serial_decimal(),
            signer,
        })
    }

    /// `certId`.
    pub fn cert_id(&self) -> &str {
        &self.cert_id
    }

    /// `merId`.
    pub fn mer_id(&self) -> &str {
        &self.mer_id
    }

    /// The operation's fields with the common ones, `certId` and `signature`, in sign order.
    pub fn signed(
        &self,
        operation: Vec<(&'static str, String)>,
    ) -> Result<Vec<(String, String)>, AdapterError> {
        let mut fields: Vec<(String, String)> = [
            ("version", "5.1.0"),
            ("encoding", "utf-8"),
            ("signMethod", "01"),
            ("accessType", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        fields.push(("merId".into(), self.mer_id.clone()));
        fields.push(("certId".into(), self.cert_id.clone()));
        fields.extend(operation.into_iter().map(|(k, v)| (k.to_owned(), v)));
        fields.retain(|(_, v)| !v.is_empty());
        fields.sort();
        let signature = sign::signature(
            &self.signer,
            fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .map_err(|_| AdapterError::Signing)?;
        fields.push(("signature".into(), signature));
        Ok(fields)
    }
}

/// Money as `txnAmt`: fen, in CNY only (`currencyCode=156`).
fn txn_amt(amount: Money) -> Result<String, AdapterError> {
    if amount.currency.code() != "CNY" || amount.minor <= 0 {
        return Err(AdapterError::InvalidParameter {
            param: "amount",
            message: "UnionPay takes positive amounts in CNY".to_owned(),
        });
    }
    Ok(amount.minor.to_string())
}

/// What names a transaction call: `txnType`, `txnSubType`, `bizType`, `channelType`.
type Kind = (&'static str, &'static str, &'static str, &'static str);

/// The fields every transaction call carries (§1.2): its kind, its order and `txnTime`, the
/// amount in fen and CNY, and the `backUrl` notified of its outcome.
fn transaction(
    (txn_type, sub_type, biz_type, channel): Kind,
    order_id: &str,
    txn_time: &str,
    amount: Money,
    back_url: &str,
) -> Result<Vec<(&'static str, String)>, AdapterError> {
    Ok(vec![
        ("txnType", txn_type.into()),
        ("txnSubType", sub_type.into()),
        ("bizType", biz_type.into()),
        ("channelType", channel.into()),
        ("orderId", order_id.into()),
        ("txnTime", txn_time.into()),
        ("txnAmt", txn_amt(amount)?),
        ("currencyCode", "156".into()),
        ("backUrl", back_url.into()),
    ])
}

/// A consume (`backTransReq` `01/{sub_type}/000000/08`) with the field that makes it what it
/// is.
fn consume(
    sub_type: &'static str,
    order_id: &str,
    txn_time: &str,
    amount: Money,
    back_url: &str,
    own: (&'static str, &str),
) -> Result<Vec<(&'static str, String)>, AdapterError> {
    let mut fields = transaction(
        ("01", sub_type, "000000", "08"),
        order_id,
        txn_time,
        amount,
        back_url,
    )?;
    fields.push((own.0, own.1.into()));
    Ok(fields)
}

/// QR apply (申码, merchant-presented): `backTransReq` `01/07/000000/08`; its answer's
/// `qrCode` is what the shopper scans.
pub fn qr_apply(
    order_id: &str,
    txn_time: &str,
    amount: Money,
    back_url: &str,
    pay_timeout: &str,
) -> Result<Vec<(&'static str, String)>, AdapterError> {
    consume(
        "07",
        order_id,
        txn_time,
        amount,
        back_url,
        ("payTimeout", pay_timeout),
    )
}

/// Gateway consume (网关支付, `frontTransReq` `01/01/000201/{channel}`: `07` desktop web,
/// `08` mobile web) that the shopper's browser posts: UnionPay shows its payment page, sends
/// the browser back to `frontUrl` and notifies `backUrl` (more-wallets.md §1.2).
pub fn front_consume(
    channel: &'static str,
    order_id: &str,
    txn_time: &str,
    amount: Money,
    back_url: &str,
    front_url: &str,
    pay_timeout: &str,
) -> Result<Vec<(&'static str, String)>, AdapterError> {
    let mut fields = transaction(
        ("01", "01", "000201", channel),
        order_id,
        txn_time,
        amount,
        back_url,
    )?;
    fields.push(("frontUrl", front_url.into()));
    fields.push(("payTimeout", pay_timeout.into()));
    Ok(fields)
}

/// Consume with the shopper's payment code (被扫): `backTransReq` `01/06/000000/08`, the
/// code as `qrNo`.
pub fn code_consume(
    order_id: &str,
    txn_time: &str,
    amount: Money,
    back_url: &str,
    payment_code: &str,
) -> Result<Vec<(&'static str, String)>, AdapterError> {
    consume(
        "06",
        order_id,
        txn_time,
        amount,
        back_url,
        ("qrNo", payment_code),
    )
}

/// Query of one transaction (`queryTrans`, `00/00/000000`), by its `orderId` and the
/// `txnTime` it was sent with.
pub fn query(order_id: &str, txn_time: &str) -> Vec<(&'static str, String)> {
    vec![
        ("txnType", "00".into()),
        ("txnSubType", "00".into()),
        ("bizType", "000000".into()),
        ("orderId", order_id.into()),
        ("txnTime", txn_time.into()),
    ]
}

/// File transfer (`76/01/000000`, `fileType=00`) of the bill of clearing day `day`, sent at
/// `txn_time`: `settleDate` is the day's `MMDD` (§1.2; no `backUrl`, no currency).
pub fn file_transfer(txn_time: &str, day: time::Date) -> Vec<(&'static str, String)> {
    vec![
        ("txnType", "76".into()),
        ("txnSubType", "01".into()),
        ("bizType", "000000".into()),
        ("channelType", "07".into()),
        ("fileType", "00".into()),
        ("txnTime", txn_time.into()),
        (
            "settleDate",
            format!("{:02}{:02}", u8::from(day.month()), day.day()),
        ),
    ]
}

/// How a refund is sent: a same-day undo of the whole consume (消费撤销, `31`), or a refund
/// (退货, `04`, partial allowed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reversal {
    /// `31/00/000000`.
    Undo,
    /// `04/00/000000`.
    Refund,
}

/// UnionPay's clearing day of a time: the statement day [`crate::FACTS`] declares (the
/// Beijing date, the next one from 23:00 on).
pub fn clearing_day(at: time::OffsetDateTime) -> time::Date {
    crate::FACTS.wallet.statement_day.day_of(at)
}

/// An undo when the whole amount goes back on the clearing day of the payment, else a refund.
pub fn reversal(
    paid: Money,
    refund: Money,
    paid_at: time::OffsetDateTime,
    now: time::OffsetDateTime,
) -> Reversal {
    if refund == paid && clearing_day(paid_at) == clearing_day(now) {
        Reversal::Undo
    } else {
        Reversal::Refund
    }
}

/// A refund or undo of the consume `orig_qry_id`, under its own new `order_id`; the
/// payment's own order id rides in `reqReserved`, which UnionPay echoes in the notification
/// (whose `orderId` is the refund's).
pub fn reverse(
    kind: Reversal,
    order_id: &str,
    txn_time: &str,
    amount: Money,
    orig_qry_id: &str,
    back_url: &str,
    payment_order_id: &str,
) -> Result<Vec<(&'static str, String)>, AdapterError> {
    let txn_type = match kind {
        Reversal::Undo => "31",
        Reversal::Refund => "04",
    };
    let mut fields = transaction(
        (txn_type, "00", "000000", "08"),
        order_id,
        txn_time,
        amount,
        back_url,
    )?;
    fields.push(("origQryId", orig_qry_id.into()));
    fields.push(("reqReserved", payment_order_id.into()));
    Ok(fields)
}

/// The form body of signed fields.
pub fn form_body(fields: &[(String, String)]) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
        .into_bytes()
}
